package webhook_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
	"sigs.k8s.io/yaml"

	"github.com/meshrelay/meshrelay/internal/scheme"
	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/pkg/pki"
	"github.com/meshrelay/meshrelay/pkg/relaysecret"
	"github.com/meshrelay/meshrelay/webhook"
	"github.com/meshrelay/meshrelay/webhook/injector"
)

// failingReader fails every read, as an API server that cannot be reached.
type failingReader struct{ client.Reader }

var errUnreachable = errors.New("the API server is unreachable")

func (failingReader) Get(context.Context, client.ObjectKey, client.Object, ...client.GetOption) error {
	return errUnreachable
}

func review(t *testing.T, h admission.Handler, op admissionv1.Operation, namespace string, obj, old any) admission.Response {
	t.Helper()
	raw := func(o any) []byte {
		if o == nil {
			return nil
		}
		b, err := json.Marshal(o)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	req := admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
		UID: reviewUID, Operation: op, Namespace: namespace,
		Object: runtime.RawExtension{Raw: raw(obj)}, OldObject: runtime.RawExtension{Raw: raw(old)},
	}}
	resp := h.Handle(t.Context(), req)
	// As the webhook server completes every response.
	if err := resp.Complete(req); err != nil {
		t.Fatal(err)
	}
	return resp
}

const reviewUID = "review"

// wantResponse compares got with want as the webhook server sends it.
func wantResponse(t *testing.T, got, want admission.Response) {
	t.Helper()
	if err := want.Complete(admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{UID: reviewUID}}); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.AdmissionResponse, want.AdmissionResponse) || len(got.Patches) != len(want.Patches) {
		t.Errorf("response\n %+v %+v\nwant\n %+v %+v", got.AdmissionResponse, got.Result, want.AdmissionResponse, want.Result)
	}
}

// TestValidatorsAnswerAsTheHandlersDid pins each answer of the typed
// validators to the response the hand-written handlers built: the denial
// on one line (403) with the warnings beside it, an internal error as a
// 500, deletes allowed, and the namespace taken from the request.
func TestValidatorsAnswerAsTheHandlersDid(t *testing.T) {
	const ns = config.DefaultNamespace
	f := newPKI(t)
	other := newPKI(t)
	s, err := scheme.Scheme()
	if err != nil {
		t.Fatal(err)
	}
	// Without --cluster a client secret is warned about and still checked.
	cfg := config.DefaultWebhook()
	reader := fake.NewClientBuilder().WithScheme(s).Build()
	handlers := webhook.Handlers(&cfg, reader, s, clocktesting.NewFakePassiveClock(f.now).Now)
	v := webhook.NewValidator(&cfg, reader, clocktesting.NewFakePassiveClock(f.now))
	secrets := handlers[webhook.SecretsPath]

	t.Run("a denial is one line after the subject, with the warnings", func(t *testing.T) {
		sec := tlsSecret(t, ns, config.DefaultClientTLSSecret, f.client(t, cluster, pki.Options{}), f.root.CAPEM())
		otherKey, err := other.root.KeyPEM()
		if err != nil {
			t.Fatal(err)
		}
		sec.Data[relaysecret.KeyTLSKey] = otherKey
		denials, warnings, err := v.Secret(t.Context(), sec)
		if err != nil || len(denials) == 0 || len(warnings) == 0 {
			t.Fatalf("the case needs denials and warnings: %q %q %v", denials, warnings, err)
		}
		want := admission.Denied("secret " + ns + "/" + config.DefaultClientTLSSecret + ": " + strings.Join(denials, "; ")).WithWarnings(warnings...)
		wantResponse(t, review(t, secrets, admissionv1.Create, ns, sec, nil), want)
		wantResponse(t, review(t, secrets, admissionv1.Update, ns, sec, sec), want)
	})

	t.Run("an admission carries the warnings", func(t *testing.T) {
		sec := tokenSecret("short")
		_, warnings, _ := v.Secret(t.Context(), sec)
		if len(warnings) == 0 {
			t.Fatal("a short token is not warned about")
		}
		wantResponse(t, review(t, secrets, admissionv1.Create, ns, sec, nil), admission.Allowed("").WithWarnings(warnings...))
	})

	t.Run("a failure to read the root is a 500, not a denial", func(t *testing.T) {
		h := webhook.Handlers(&cfg, failingReader{}, s, clocktesting.NewFakePassiveClock(f.now).Now)[webhook.SecretsPath]
		sec := tlsSecret(t, ns, config.DefaultClientTLSSecret, f.client(t, cluster, pki.Options{}), f.root.CAPEM())
		want := admission.Errored(http.StatusInternalServerError,
			fmt.Errorf("failed to read secret %s/%s: %w", ns, config.DefaultRootTLSSecret, errUnreachable))
		wantResponse(t, review(t, h, admissionv1.Create, ns, sec, nil), want)
	})

	t.Run("deletes are allowed", func(t *testing.T) {
		for path, obj := range map[string]any{
			webhook.SecretsPath:      tokenSecret(""),
			webhook.CertificatesPath: &cmapi.Certificate{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "c"}, Spec: cmapi.CertificateSpec{SecretName: config.DefaultClientTLSSecret}},
			webhook.ClustersPath:     map[string]any{"apiVersion": "meshrelay.dev/v1alpha1", "kind": "KubernetesCluster", "metadata": map[string]any{"name": "a.b"}},
		} {
			wantResponse(t, review(t, handlers[path], admissionv1.Delete, ns, nil, obj), admission.Allowed(""))
		}
	})

	t.Run("an object without a namespace is checked in the request's", func(t *testing.T) {
		sec := tokenSecret("")
		sec.Namespace = ""
		resp := review(t, secrets, admissionv1.Create, ns, sec, nil)
		wantPrefix := "secret " + ns + "/" + config.DefaultTokenSecret + ": data[token]: missing or empty"
		if resp.Allowed || resp.Result.Code != http.StatusForbidden || !strings.HasPrefix(resp.Result.Message, wantPrefix) {
			t.Errorf("token secret: %+v, want a denial starting %q", resp.Result, wantPrefix)
		}
		crt := &cmapi.Certificate{ObjectMeta: metav1.ObjectMeta{Name: "c"}, Spec: cmapi.CertificateSpec{SecretName: config.DefaultClientTLSSecret, Usages: []cmapi.KeyUsage{cmapi.UsageServerAuth}}}
		resp = review(t, handlers[webhook.CertificatesPath], admissionv1.Create, ns, crt, nil)
		if wantPrefix := "Certificate " + ns + "/c: spec.usages"; resp.Allowed || !strings.HasPrefix(resp.Result.Message, wantPrefix) {
			t.Errorf("Certificate: %+v, want a denial starting %q", resp.Result, wantPrefix)
		}
	})
}

// TestInjectorPatchIsTheOneTheHandlerComputed sends each golden pod of
// webhook/injector/testdata, as the API server's JSON, through the
// injector webhook and compares its patch with the one the hand-written
// handler returned: the raw pod against the injected pod's JSON.
func TestInjectorPatchIsTheOneTheHandlerComputed(t *testing.T) {
	s, err := scheme.Scheme()
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.DefaultWebhook()
	cfg.Cluster, cfg.ServerAddress = cluster, "gloo-mesh-mgmt-server.gloo-mesh:9900"
	h := webhook.Handlers(&cfg, nil, s, nil)[webhook.InjectPath]
	settings := injector.Settings{
		Cluster: cfg.Cluster, ServerAddress: cfg.ServerAddress, Authority: cfg.Authority, ClientTLSSecret: cfg.ClientTLSSecret.Name,
		RootTLSSecret: cfg.RootTLSSecret.Name, TokenSecret: cfg.TokenSecret.Name, Container: cfg.AgentContainer,
		Namespace: cfg.Namespace, ClusterTrustBundles: true,
	}
	inputs, err := filepath.Glob("injector/testdata/*.in.yaml")
	if err != nil || len(inputs) == 0 {
		t.Fatalf("no golden inputs: %v", err)
	}
	for _, in := range inputs {
		t.Run(filepath.Base(in), func(t *testing.T) {
			y, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			raw, err := yaml.YAMLToJSON(y)
			if err != nil {
				t.Fatal(err)
			}
			var pod corev1.Pod
			if err := json.Unmarshal(raw, &pod); err != nil {
				t.Fatal(err)
			}
			if !injector.Pod(&pod, settings) {
				t.Fatal("nothing injected")
			}
			injected, err := json.Marshal(&pod)
			if err != nil {
				t.Fatal(err)
			}
			want := admission.PatchResponseFromRaw(raw, injected)
			got := h.Handle(t.Context(), admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
				UID: "inject", Operation: admissionv1.Create, Object: runtime.RawExtension{Raw: raw},
			}})
			if !got.Allowed || got.PatchType == nil || *got.PatchType != admissionv1.PatchTypeJSONPatch {
				t.Fatalf("not a JSON patch: %+v", got.AdmissionResponse)
			}
			if g, w := sortedPatch(t, got), sortedPatch(t, want); g != w {
				t.Errorf("patch\n%s\nwant\n%s", g, w)
			}

			again := h.Handle(t.Context(), admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
				UID: "again", Operation: admissionv1.Create, Object: runtime.RawExtension{Raw: injected},
			}})
			if !again.Allowed || again.PatchType != nil || len(again.Patches) != 0 {
				t.Errorf("an injected pod was patched again: %+v %v", again.AdmissionResponse, again.Patches)
			}
		})
	}

	const ns = config.DefaultNamespace
	t.Run("without the agent's settings agent pods are refused", func(t *testing.T) {
		bare := config.DefaultWebhook()
		h := webhook.Handlers(&bare, nil, s, nil)[webhook.InjectPath]
		resp := review(t, h, admissionv1.Create, ns, &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: bare.AgentContainer}}}}, nil)
		want := "relay-webhook cannot inject agent pods: "
		if resp.Allowed || resp.Result.Code != http.StatusForbidden || !strings.HasPrefix(resp.Result.Message, want) ||
			!strings.HasSuffix(resp.Result.Message, ": set --cluster and --server-address on the webhook of this workload cluster") {
			t.Errorf("response %+v, want a denial starting %q", resp.Result, want)
		}
	})
}

func sortedPatch(t *testing.T, r admission.Response) string {
	t.Helper()
	ops := r.Patches
	sort.Slice(ops, func(i, j int) bool { return ops[i].Path < ops[j].Path })
	b, err := json.Marshal(ops)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
