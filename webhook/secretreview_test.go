package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
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

// reviewFixture is a relay PKI, the webhook's configuration, secrets of
// it and AdmissionReviews of them, as the API server sends them.
type reviewFixture struct {
	s                              *runtime.Scheme
	cfg                            config.Webhook
	rootSecret, good, otherCluster *corev1.Secret
}

func newReviewFixture(t *testing.T) *reviewFixture {
	t.Helper()
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
	f := &reviewFixture{s: s, cfg: config.DefaultWebhook()}
	f.cfg.Cluster, f.cfg.ServerAddress = "cluster-1", "relay.example:9900"
	secret := func(name string, c *pki.Certified, ca []byte) *corev1.Secret {
		key, err := c.KeyPEM()
		if err != nil {
			t.Fatal(err)
		}
		return &corev1.Secret{
			TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
			ObjectMeta: metav1.ObjectMeta{Namespace: f.cfg.Namespace, Name: name},
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
	f.rootSecret = secret(f.cfg.RootTLSSecret.Name, root, root.CAPEM())
	f.good = secret(f.cfg.ClientTLSSecret.Name, issue("cluster-1"), root.CAPEM())
	f.otherCluster = secret(f.cfg.ClientTLSSecret.Name, issue("cluster-2"), root.CAPEM())
	return f
}

// raw is obj as JSON (obj itself when a string).
func raw(t *testing.T, obj any) string {
	t.Helper()
	if s, ok := obj.(string); ok {
		return s
	}
	b, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// review is an AdmissionReview (apiVersion, none when empty) of an
// operation on the client secret with obj and old (none when nil) as its
// objects.
func (f *reviewFixture) review(t *testing.T, apiVersion string, op admissionv1.Operation, obj, old any) string {
	t.Helper()
	req := map[string]any{"uid": "u-1", "kind": map[string]string{"version": "v1", "kind": "Secret"},
		"resource": map[string]string{"version": "v1", "resource": "secrets"}, "namespace": f.cfg.Namespace,
		"name": f.cfg.ClientTLSSecret.Name, "operation": op, "userInfo": map[string]any{"username": "alice"}}
	if obj != nil {
		req["object"] = json.RawMessage(raw(t, obj))
	}
	if old != nil {
		req["oldObject"] = json.RawMessage(raw(t, old))
	}
	ar := map[string]any{"request": req}
	if apiVersion != "" {
		ar["apiVersion"], ar["kind"] = apiVersion, "AdmissionReview"
	}
	return raw(t, ar)
}

// post sends body to h as the API server does (Content-Type
// application/json unless contentType) and returns the answer.
func post(h http.Handler, body, contentType string) (int, string) {
	req := httptest.NewRequest(http.MethodPost, SecretsPath, http.NoBody)
	if body != "" {
		req = httptest.NewRequest(http.MethodPost, SecretsPath, strings.NewReader(body))
	}
	if contentType == "" {
		contentType = "application/json"
	}
	req.Header.Set("Content-Type", contentType)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Code, rec.Body.String()
}

// TestSecretReviewsAnswerAsControllerRuntime sends the same reviews to
// secretReviews and to controller-runtime's admission.WithValidator around
// the same validator, over HTTP and to Handle: every answer is the same,
// byte for byte.
func TestSecretReviewsAnswerAsControllerRuntime(t *testing.T) {
	f := newReviewFixture(t)
	s, cfg, good, otherCluster := f.s, f.cfg, f.good, f.otherCluster
	noCA := good.DeepCopy()
	delete(noCA.Data, relaysecret.KeyCACert)
	broken := good.DeepCopy()
	broken.Data[relaysecret.KeyTLSCert] = []byte("not PEM")
	unnamed := good.DeepCopy()
	unnamed.Namespace = ""
	configMap := fmt.Sprintf(`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"namespace":%q,"name":%q}}`, cfg.Namespace, cfg.ClientTLSSecret.Name)
	v2 := fmt.Sprintf(`{"apiVersion":"v2","kind":"Secret","metadata":{"namespace":%q,"name":%q}}`, cfg.Namespace, cfg.ClientTLSSecret.Name)
	bare := fmt.Sprintf(`{"metadata":{"namespace":%q,"name":%q},"data":{"tls.crt":"eA=="}}`, cfg.Namespace, cfg.ClientTLSSecret.Name)
	review := func(apiVersion string, op admissionv1.Operation, obj, old any) string {
		return f.review(t, apiVersion, op, obj, old)
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
		{"fields unknown here, as a newer API server may add", withField(t, withField(t, review(v1, admissionv1.Update, withField(t, raw(t, good), "futureField", `{"a":[1,2]}`), withField(t, raw(t, good), "futureField", "1")), "futureField", `"x"`), "request.futureField", "{}"), "", false},
		{"create of a Secret of apiVersion a/b/c", review(v1, admissionv1.Create, strings.Replace(raw(t, good), `"apiVersion":"v1"`, `"apiVersion":"a/b/c"`, 1), nil), "", false},
		{"a review of apiVersion a/b/c", review("admission.k8s.io/v1/x", admissionv1.Create, good, nil), "", false},
		{"another content type", review(v1, admissionv1.Create, good, nil), "text/plain", false},
	}
	for _, r := range []struct {
		name   string
		reader client.Reader
	}{
		{"with the root secret", fake.NewClientBuilder().WithScheme(s).WithObjects(f.rootSecret).Build()},
		{"with a reader that fails", errReader{}},
	} {
		ref, ours := f.handlers(r.reader)
		for _, b := range bodies {
			t.Run(r.name+"/"+b.name, func(t *testing.T) {
				wantCode, want := post(ref, b.body, b.contentType)
				gotCode, got := post(ours, b.body, b.contentType)
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

// withField is the JSON object obj with one more field, key (at path
// "request.key" when key has that prefix), of JSON value val, after its
// others: a second one when obj has one already.
func withField(t *testing.T, obj, key, val string) string {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal([]byte(obj), &m); err != nil {
		t.Fatal(err)
	}
	if sub, ok := strings.CutPrefix(key, "request."); ok {
		i := strings.Index(obj, `"request":`+string(m["request"]))
		if i < 0 {
			t.Fatalf("no request in %s", obj)
		}
		i += len(`"request":`)
		return obj[:i] + withField(t, string(m["request"]), sub, val) + obj[i+len(m["request"]):]
	}
	return strings.TrimSuffix(obj, "}") + fmt.Sprintf(",%q:%s}", key, val)
}

// TestSecretReviewsRefuseAmbiguousBodies sends bodies no API server
// produces, whose meaning depends on how they are read: a field twice
// (encoding/json merges the second object into the first, or keeps the
// last) or a kind or apiVersion twice in different cases (controller-runtime
// looks the kind up without regard to case, the fields with). Each is
// refused as a bad request naming the field, not reviewed.
func TestSecretReviewsRefuseAmbiguousBodies(t *testing.T) {
	f := newReviewFixture(t)
	v1 := "admission.k8s.io/v1"
	good := raw(t, f.good)
	// partial is the client secret without its data: reviewed alone, it
	// is refused; merged into good, good.
	partial := fmt.Sprintf(`{"apiVersion":"v1","kind":"Secret","metadata":{"namespace":%q,"name":%q},"type":"kubernetes.io/tls","data":{}}`, f.cfg.Namespace, f.cfg.ClientTLSSecret.Name)
	goodReview := f.review(t, v1, admissionv1.Create, good, nil)
	var second map[string]json.RawMessage
	if err := json.Unmarshal([]byte(f.review(t, v1, admissionv1.Create, partial, nil)), &second); err != nil {
		t.Fatal(err)
	}
	manyUnknown := goodReview
	for i := range 100 {
		manyUnknown = withField(t, manyUnknown, fmt.Sprintf("request.futureField%d", i), "1")
	}
	for _, c := range []struct {
		name, body, field string
		// refRefuses: controller-runtime refuses it too (it reads the
		// kind that is not a Secret's).
		refRefuses bool
	}{
		{"the object twice, a good secret then one without data",
			withField(t, goodReview, "request.object", partial), `duplicate field "request.object"`, true},
		{"the request twice",
			withField(t, goodReview, "request", string(second["request"])), `duplicate field "request"`, false},
		{"the object's data twice",
			f.review(t, v1, admissionv1.Create, withField(t, good, "data", "{}"), nil), `duplicate field "request.object.data"`, false},
		{"a key of the data twice",
			f.review(t, v1, admissionv1.Create, strings.Replace(good, `"data":{`, `"data":{"tls.crt":"eA==",`, 1), nil), `duplicate field "request.object.data.tls.crt"`, false},
		{"Kind ConfigMap beside kind Secret",
			f.review(t, v1, admissionv1.Create, withField(t, good, "Kind", `"ConfigMap"`), nil), `"request.object.Kind"`, true},
		{"kind ConfigMap with a Kelvin sign beside kind Secret",
			f.review(t, v1, admissionv1.Create, withField(t, good, "\u212aind", `"ConfigMap"`), nil), `"request.object.\u212aind"`, true},
		{"APIVERSION v2 beside apiVersion v1 in the old object",
			f.review(t, v1, admissionv1.Update, good, withField(t, good, "APIVERSION", `"v2"`)), `"request.oldObject.APIVERSION"`, true},
		{"Kind beside kind in the review",
			withField(t, goodReview, "Kind", `"ConfigMap"`), `"Kind"`, false},
		{"the object twice after 100 unknown fields, which could hide it",
			withField(t, manyUnknown, "request.object", partial), "100 or more", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			ref, ours := f.handlers(fake.NewClientBuilder().WithScheme(f.s).WithObjects(f.rootSecret).Build())
			answer := func(h http.Handler) *admissionv1.AdmissionResponse {
				t.Helper()
				_, body := post(h, c.body, "")
				var ar admissionv1.AdmissionReview
				if err := json.Unmarshal([]byte(body), &ar); err != nil || ar.Response == nil {
					t.Fatalf("answer %s (%v)", body, err)
				}
				return ar.Response
			}
			got := answer(ours)
			if got.Allowed || got.Result == nil || got.Result.Code != http.StatusBadRequest || !strings.Contains(got.Result.Message, c.field) {
				t.Errorf("answer %+v, want a bad request naming %s", got, c.field)
			}
			if want := answer(ref); c.refRefuses && want.Allowed {
				t.Errorf("controller-runtime allows it: %+v", want)
			}
			// Handle, given the review as encoding/json reads it (the last
			// of two objects or requests), refuses an object that is
			// ambiguous itself.
			var ar admissionv1.AdmissionReview
			if err := json.Unmarshal([]byte(c.body), &ar); err != nil || ar.Request == nil {
				t.Fatalf("review %v", err)
			}
			for _, object := range []string{`"request.object.`, `"request.oldObject.`} {
				if _, field, ok := strings.Cut(c.field, object); ok {
					resp := ours.Handle(context.Background(), admission.Request{AdmissionRequest: *ar.Request})
					if field = `"` + field; resp.Allowed || resp.Result.Code != http.StatusBadRequest || !strings.Contains(resp.Result.Message, field) {
						t.Errorf("Handle: %+v, want a bad request naming %s", resp.AdmissionResponse, field)
					}
				}
			}
		})
	}
}

// handlers are controller-runtime's validating webhook and secretReviews
// around validators of f's configuration reading secrets from reader.
func (f *reviewFixture) handlers(reader client.Reader) (ref *admission.Webhook, ours *secretReviews) {
	newSecrets := func() *secrets {
		return &secrets{cfg: &f.cfg, reader: reader, now: time.Now, roots: &rootCache{}}
	}
	return admission.WithValidator[*corev1.Secret](f.s, &secretValidator{s: newSecrets()}),
		&secretReviews{v: &secretValidator{s: newSecrets()}}
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
	if err := decodeStrict(body, &review, "", "request.object", "request.oldObject"); err != nil {
		t.Fatal(err)
	}
	if got := review.Request.Object; got == nil || got.Name != sec.Name || string(got.Data["token"]) != "t0ken" || got.Kind != "Secret" {
		t.Fatalf("decoded object %+v, want the review's Secret", got)
	}
	if review.Request.UID != "u" || review.Request.Operation != admissionv1.Create || len(review.Request.AdmissionRequest.Object.Raw) != 0 {
		t.Errorf("decoded request %+v", review.Request.AdmissionRequest)
	}
}
