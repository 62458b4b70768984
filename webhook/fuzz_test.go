package webhook

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/meshrelay/meshrelay/internal/scheme"
	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/pkg/pki"
	"github.com/meshrelay/meshrelay/pkg/relaysecret"
)

// handlersForFuzzing returns every handler with a fake reader that holds a
// root secret, so that the chain checks run too.
func handlersForFuzzing(t testing.TB) map[string]admission.Handler {
	scheme, err := scheme.Scheme()
	if err != nil {
		t.Fatal(err)
	}
	root, err := pki.NewRootCA(pki.Options{CommonName: "fuzz-root", TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.DefaultWebhook()
	cfg.Cluster, cfg.ServerAddress = "cluster-1", "relay.example:9900"
	reader := fake.NewClientBuilder().WithScheme(scheme).WithObjects(&corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: cfg.Namespace, Name: cfg.RootTLSSecret.Name},
		Data:       map[string][]byte{relaysecret.KeyCACert: root.CAPEM()},
	}).Build()
	return Handlers(&cfg, reader, scheme, time.Now)
}

// FuzzAdmissionRequests sends arbitrary objects, old objects and operations
// to every handler: none may panic, and every answer is an allowance, a
// denial with a message, or an error status.
func FuzzAdmissionRequests(f *testing.F) {
	seed := func(obj any) []byte { b, _ := json.Marshal(obj); return b }
	f.Add(uint8(0), seed(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "gloo-mesh", Name: "relay-client-tls-secret"},
		Data: map[string][]byte{"tls.crt": []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")}}), []byte(nil))
	f.Add(uint8(1), seed(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "gloo-mesh", Name: "relay-root-tls-secret"},
		Data: map[string][]byte{"ca.crt": []byte("x")}}), seed(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "gloo-mesh", Name: "relay-root-tls-secret"}}))
	f.Add(uint8(2), []byte(`{"apiVersion":"cert-manager.io/v1","kind":"Certificate","metadata":{"namespace":"gloo-mesh","name":"c"},"spec":{"secretName":"relay-client-tls-secret","dnsNames":["a_b"],"renewBefore":"1h"}}`), []byte(nil))
	f.Add(uint8(3), []byte(`{"apiVersion":"meshrelay.dev/v1alpha1","kind":"KubernetesCluster","metadata":{"name":"a.b"}}`), []byte(nil))
	f.Add(uint8(4), []byte(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[{"name":"relay-agent"}]}}`), []byte(nil))
	f.Add(uint8(5), []byte(`{`), []byte(`null`))
	handlers := handlersForFuzzing(f)
	paths := []string{SecretsPath, SecretsPath, CertificatesPath, ClustersPath, InjectPath}
	ops := []admissionv1.Operation{admissionv1.Create, admissionv1.Update, admissionv1.Delete, admissionv1.Connect}
	f.Fuzz(func(t *testing.T, which uint8, object, old []byte) {
		h := handlers[paths[int(which)%len(paths)]]
		req := admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
			UID: "fuzz", Operation: ops[int(which/8)%len(ops)], Namespace: "gloo-mesh", Name: "relay-client-tls-secret",
			Object: runtime.RawExtension{Raw: object}, OldObject: runtime.RawExtension{Raw: old},
		}}
		resp := h.Handle(context.Background(), req)
		if !resp.Allowed && (resp.Result == nil || resp.Result.Message == "") {
			t.Fatalf("refused without a message: %+v", resp.AdmissionResponse)
		}
	})
}
