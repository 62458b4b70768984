package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	kjson "k8s.io/apimachinery/pkg/util/json"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/meshrelay/meshrelay/internal/scheme"
	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/pkg/pki"
	"github.com/meshrelay/meshrelay/pkg/relaysecret"
)

// errReader fails every read, as an API server that cannot be reached.
type errReader struct{ client.Reader }

func (errReader) Get(context.Context, client.ObjectKey, client.Object, ...client.GetOption) error {
	return errors.New("the server is unreachable")
}

// TestSecretReviewsAnswerAsControllerRuntime sends the same reviews to
// secretReviews and to controller-runtime's admission.WithValidator around
// the same validator, over HTTP and to Handle: every answer is the same,
// byte for byte.
func TestSecretReviewsAnswerAsControllerRuntime(t *testing.T) {
	s, err := scheme.Scheme()
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	root, err := pki.NewRootCA(pki.Options{CommonName: "relay-root", TTL: 24 * time.Hour, Now: now.Add(-time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	signing, err := root.NewIntermediateCA(pki.Options{CommonName: "relay-signing", TTL: 12 * time.Hour, Now: now.Add(-time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.DefaultWebhook()
	cfg.Cluster, cfg.ServerAddress = "cluster-1", "relay.example:9900"
	secret := func(name string, c *pki.Certified, ca []byte) *corev1.Secret {
		key, err := c.KeyPEM()
		if err != nil {
			t.Fatal(err)
		}
		return &corev1.Secret{
			TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
			ObjectMeta: metav1.ObjectMeta{Namespace: cfg.Namespace, Name: name},
			Type:       corev1.SecretTypeTLS,
			Data:       map[string][]byte{relaysecret.KeyTLSCert: c.CertPEM(), relaysecret.KeyTLSKey: key, relaysecret.KeyCACert: ca},
		}
	}
	issue := func(name string) *pki.Certified {
		c, err := signing.IssueClient(pki.Options{DNSNames: []string{name}, TTL: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	rootSecret := secret(cfg.RootTLSSecret.Name, root, root.CAPEM())
	good := secret(cfg.ClientTLSSecret.Name, issue("cluster-1"), root.CAPEM())
	otherCluster := secret(cfg.ClientTLSSecret.Name, issue("cluster-2"), root.CAPEM())
	noCA := good.DeepCopy()
	delete(noCA.Data, relaysecret.KeyCACert)
	broken := good.DeepCopy()
	broken.Data[relaysecret.KeyTLSCert] = []byte("not PEM")
	unnamed := good.DeepCopy()
	unnamed.Namespace = ""
	configMap := fmt.Sprintf(`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"namespace":%q,"name":%q}}`, cfg.Namespace, cfg.ClientTLSSecret.Name)
	v2 := fmt.Sprintf(`{"apiVersion":"v2","kind":"Secret","metadata":{"namespace":%q,"name":%q}}`, cfg.Namespace, cfg.ClientTLSSecret.Name)
	bare := fmt.Sprintf(`{"metadata":{"namespace":%q,"name":%q},"data":{"tls.crt":"eA=="}}`, cfg.Namespace, cfg.ClientTLSSecret.Name)

	raw := func(obj any) string {
		if s, ok := obj.(string); ok {
			return s
		}
		b, err := json.Marshal(obj)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	review := func(apiVersion string, op admissionv1.Operation, obj, old any) string {
		req := map[string]any{"uid": "u-1", "kind": map[string]string{"version": "v1", "kind": "Secret"},
			"resource": map[string]string{"version": "v1", "resource": "secrets"}, "namespace": cfg.Namespace,
			"name": cfg.ClientTLSSecret.Name, "operation": op, "userInfo": map[string]any{"username": "alice"}}
		if obj != nil {
			req["object"] = json.RawMessage(raw(obj))
		}
		if old != nil {
			req["oldObject"] = json.RawMessage(raw(old))
		}
		ar := map[string]any{"request": req}
		if apiVersion != "" {
			ar["apiVersion"], ar["kind"] = apiVersion, "AdmissionReview"
		}
		return raw(ar)
	}
	v1 := "admission.k8s.io/v1"
	// Two refusals of what no API server sends (a Secret of another
	// version, a body that is not JSON) are worded otherwise: the check
	// compares all but their message.
	bodies := []struct {
		name, body, contentType string
		otherMessage            bool
	}{
		{"create of a good client secret", review(v1, admissionv1.Create, good, nil), "", false},
		{"create of another cluster's", review(v1, admissionv1.Create, otherCluster, nil), "", false},
		{"create without ca.crt (a warning)", review(v1, admissionv1.Create, noCA, nil), "", false},
		{"create of a broken secret", review(v1, admissionv1.Create, broken, nil), "", false},
		{"create without a namespace in the object", review(v1, admissionv1.Create, unnamed, nil), "", false},
		{"create without an object", review(v1, admissionv1.Create, nil, nil), "", false},
		{"create of a ConfigMap", review(v1, admissionv1.Create, configMap, nil), "", false},
		{"create of a v2 Secret", review(v1, admissionv1.Create, v2, nil), "", true},
		{"create of an object without kind", review(v1, admissionv1.Create, bare, nil), "", false},
		{"update", review(v1, admissionv1.Update, good, otherCluster), "", false},
		{"update without the old object", review(v1, admissionv1.Update, good, nil), "", false},
		{"update with a ConfigMap as old object", review(v1, admissionv1.Update, good, configMap), "", false},
		{"delete", review(v1, admissionv1.Delete, nil, good), "", false},
		{"delete without the old object", review(v1, admissionv1.Delete, nil, nil), "", false},
		{"connect", review(v1, admissionv1.Connect, nil, nil), "", false},
		{"an unknown operation", review(v1, "PATCH", good, nil), "", false},
		{"a v1beta1 review", review("admission.k8s.io/v1beta1", admissionv1.Create, good, nil), "", false},
		{"a review without apiVersion", review("", admissionv1.Create, otherCluster, nil), "", false},
		{"a review without request", `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}`, "", false},
		{"text that is not JSON", `{"apiVersion":`, "", true},
		{"an empty body", "", "", false},
		{"another content type", review(v1, admissionv1.Create, good, nil), "text/plain", false},
	}
	for _, r := range []struct {
		name   string
		reader client.Reader
	}{
		{"with the root secret", fake.NewClientBuilder().WithScheme(s).WithObjects(rootSecret).Build()},
		{"with a reader that fails", errReader{}},
	} {
		newSecrets := func() *secrets {
			return &secrets{cfg: &cfg, reader: r.reader, now: time.Now, roots: &rootCache{}}
		}
		ref := admission.WithValidator[*corev1.Secret](s, &secretValidator{s: newSecrets()})
		ours := &secretReviews{v: &secretValidator{s: newSecrets()}}
		for _, b := range bodies {
			t.Run(r.name+"/"+b.name, func(t *testing.T) {
				post := func(h http.Handler) (int, string) {
					var body *bytes.Reader
					req := httptest.NewRequest(http.MethodPost, SecretsPath, http.NoBody)
					if b.body != "" {
						body = bytes.NewReader([]byte(b.body))
						req = httptest.NewRequest(http.MethodPost, SecretsPath, body)
					}
					ct := b.contentType
					if ct == "" {
						ct = "application/json"
					}
					req.Header.Set("Content-Type", ct)
					rec := httptest.NewRecorder()
					h.ServeHTTP(rec, req)
					return rec.Code, rec.Body.String()
				}
				wantCode, want := post(ref)
				gotCode, got := post(ours)
				if b.otherMessage {
					want, got = withoutMessage(t, want), withoutMessage(t, got)
				}
				if gotCode != wantCode || got != want {
					t.Errorf("answer %d %s\ncontroller-runtime's %d %s", gotCode, got, wantCode, want)
				}

				var ar admissionv1.AdmissionReview
				if json.Unmarshal([]byte(b.body), &ar) != nil || ar.Request == nil {
					return
				}
				req := admission.Request{AdmissionRequest: *ar.Request}
				wantResp, gotResp := ref.Handle(context.Background(), req), ours.Handle(context.Background(), req)
				if b.otherMessage {
					wantResp.Result.Message, gotResp.Result.Message = "", ""
				}
				w, _ := json.Marshal(wantResp.AdmissionResponse)
				g, _ := json.Marshal(gotResp.AdmissionResponse)
				if !bytes.Equal(w, g) {
					t.Errorf("Handle: %s\ncontroller-runtime's: %s", g, w)
				}
			})
		}
	}
}

// withoutMessage is an answer's JSON without its status message, which
// must be there.
func withoutMessage(t *testing.T, answer string) string {
	t.Helper()
	var ar admissionv1.AdmissionReview
	if err := json.Unmarshal([]byte(answer), &ar); err != nil || ar.Response == nil || ar.Response.Result == nil || ar.Response.Result.Message == "" {
		t.Fatalf("answer %s has no message (%v)", answer, err)
	}
	ar.Response.Result.Message = ""
	b, _ := json.Marshal(ar)
	return string(b)
}

// TestSecretReviewsDecodeTheObjectOnce checks the objects secretReviews
// hands the validator: the Secret of the review, with its data, as the
// request in the context carries it.
func TestSecretReviewsDecodeTheObjectOnce(t *testing.T) {
	sec := &corev1.Secret{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{Namespace: "gloo-mesh", Name: "relay-identity-token-secret"},
		Data:       map[string][]byte{"token": []byte("t0ken")},
	}
	obj, _ := json.Marshal(sec)
	body, _ := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{UID: "u", Operation: admissionv1.Create, Namespace: "gloo-mesh", Name: sec.Name,
			Object: runtime.RawExtension{Raw: obj}},
	})
	var review secretReview
	if err := kjson.Unmarshal(body, &review); err != nil {
		t.Fatal(err)
	}
	if got := review.Request.Object; got == nil || got.Name != sec.Name || string(got.Data["token"]) != "t0ken" || got.Kind != "Secret" {
		t.Fatalf("decoded object %+v, want the review's Secret", got)
	}
	if review.Request.UID != "u" || review.Request.Operation != admissionv1.Create || len(review.Request.AdmissionRequest.Object.Raw) != 0 {
		t.Errorf("decoded request %+v", review.Request.AdmissionRequest)
	}
}
