package webhook_test

import (
	"encoding/json"
	"slices"
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

	"github.com/meshrelay/meshrelay/internal/scheme"
	meshv1alpha1 "github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/pkg/pki"
	"github.com/meshrelay/meshrelay/webhook"
)

// TestOfflineValidatorAgreesWithTheWebhook checks every object through the
// Validator and through the admission handler with the same settings,
// reader and clock: the denials are the parts of the handler's message, the
// warnings its warnings.
func TestOfflineValidatorAgreesWithTheWebhook(t *testing.T) {
	f := newPKI(t)
	other := newPKI(t)
	ca := f.root.CAPEM()
	scheme, err := scheme.Scheme()
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.DefaultWebhook()
	cfg.Cluster = cluster
	reader := fake.NewClientBuilder().WithScheme(scheme).WithObjects(f.rootSecret(t)).Build()
	clk := clocktesting.NewFakePassiveClock(f.now)
	v := webhook.NewValidator(&cfg, reader, clk)
	handlers := webhook.Handlers(&cfg, reader, scheme, clk.Now)

	certificate := func(secretName string, dnsNames ...string) *cmapi.Certificate {
		return &cmapi.Certificate{
			TypeMeta:   metav1.TypeMeta{APIVersion: cmapi.SchemeGroupVersion.String(), Kind: cmapi.CertificateKind},
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "relay-cert"},
			Spec: cmapi.CertificateSpec{SecretName: secretName, DNSNames: dnsNames,
				Usages: []cmapi.KeyUsage{cmapi.UsageDigitalSignature, cmapi.UsageKeyEncipherment, cmapi.UsageClientAuth}},
		}
	}
	caCertificate := func(c *cmapi.Certificate) *cmapi.Certificate {
		c.Spec.IsCA = true
		return c
	}
	kc := func(name string) *meshv1alpha1.KubernetesCluster {
		return &meshv1alpha1.KubernetesCluster{
			TypeMeta:   metav1.TypeMeta{APIVersion: meshv1alpha1.GroupVersion.String(), Kind: "KubernetesCluster"},
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		}
	}
	for _, tc := range []struct {
		name     string
		obj      client.Object
		checked  bool
		denials  []string
		warnings []string
	}{
		{name: "the root secret with its key is admitted with a warning on a workload cluster", obj: f.rootSecret(t), checked: true,
			warnings: []string{"holds the private key of the relay root"}},
		{name: "the signing secret is admitted", obj: tlsSecret(t, ns, config.DefaultSigningTLSSecret, f.signing, ca), checked: true},
		{name: "the server secret is admitted", obj: tlsSecret(t, ns, config.DefaultServerTLSSecret, f.server(t, config.DefaultAuthority), ca), checked: true},
		{name: "the client secret for this cluster is admitted", obj: tlsSecret(t, ns, config.DefaultClientTLSSecret, f.client(t, cluster, pki.Options{}), ca), checked: true},
		{name: "a client secret whose SAN is another cluster is denied with the name to use",
			obj: tlsSecret(t, ns, config.DefaultClientTLSSecret, f.client(t, "cluster-2", pki.Options{}), ca), checked: true,
			denials: []string{`data[tls.crt]: client certificate is for cluster "cluster-2", not this cluster "cluster-1"`}},
		{name: "a client chain to its own ca.crt but not to relay-root-tls-secret's is denied",
			obj: tlsSecret(t, ns, config.DefaultClientTLSSecret, other.client(t, cluster, pki.Options{}), other.root.CAPEM()), checked: true,
			denials: []string{"data[tls.crt]: does not chain to relay-root-tls-secret's ca.crt"}},
		{name: "a short identity token is admitted with a warning", obj: tokenSecret("short"), checked: true,
			warnings: []string{"data[token] is 5 bytes"}},
		{name: "a secret that is not the relay's is admitted unchecked", obj: inNamespace(tokenSecret(""), "default"), checked: false},
		{name: "a client Certificate for another cluster is denied", obj: certificate(config.DefaultClientTLSSecret, "cluster-2"), checked: true,
			denials: []string{`spec.dnsNames: [cluster-2] does not hold this cluster's name "cluster-1"`}},
		{name: "a signing CA Certificate named *.gloo-mesh, as the reference's example, is admitted", obj: caCertificate(certificate(config.DefaultSigningTLSSecret, "*.gloo-mesh")), checked: true},
		{name: "a client Certificate with a wildcard name is denied", obj: certificate(config.DefaultClientTLSSecret, "*.gloo-mesh"), checked: true,
			denials: []string{`spec.dnsNames[0]: DNS name "*.gloo-mesh"`}},
		{name: "a Certificate for another secret is admitted unchecked", obj: certificate("app-tls", "a_b"), checked: false},
		{name: "a KubernetesCluster named with an underscore is denied", obj: kc("cluster_1"), checked: true,
			denials: []string{"metadata.name: ", "contains an underscore"}},
		{name: "a KubernetesCluster with a DNS-1123 label is admitted", obj: kc(cluster), checked: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := v.Checks(tc.obj); got != tc.checked {
				t.Errorf("Checks = %v, want %v", got, tc.checked)
			}
			denials, warnings, err := v.Object(t.Context(), tc.obj)
			if err != nil {
				t.Fatal(err)
			}
			if len(denials) == 0 != (len(tc.denials) == 0) {
				t.Fatalf("denials = %q, want them to contain %q", denials, tc.denials)
			}
			joined := strings.Join(denials, "; ")
			for _, want := range tc.denials {
				if !strings.Contains(joined, want) {
					t.Errorf("denials %q do not contain %q", denials, want)
				}
			}
			if len(warnings) != len(tc.warnings) || (len(warnings) > 0 && !strings.Contains(warnings[0], tc.warnings[0])) {
				t.Errorf("warnings = %q, want %q", warnings, tc.warnings)
			}

			resp := handle(t, handlers, tc.obj)
			if resp.Allowed != (len(denials) == 0) {
				t.Fatalf("the webhook allowed = %v, the Validator denials = %q", resp.Allowed, denials)
			}
			if !resp.Allowed && !strings.HasSuffix(resp.Result.Message, ": "+joined) {
				t.Errorf("the webhook's message %q does not end in the Validator's denials %q", resp.Result.Message, joined)
			}
			if !slices.Equal(resp.Warnings, warnings) {
				t.Errorf("the webhook's warnings %q differ from the Validator's %q", resp.Warnings, warnings)
			}
		})
	}
}

func inNamespace(s *corev1.Secret, namespace string) *corev1.Secret {
	s.Namespace = namespace
	return s
}

// handle sends obj to its handler as a create.
func handle(t *testing.T, handlers map[string]admission.Handler, obj client.Object) admission.Response {
	t.Helper()
	path := map[string]string{"Secret": webhook.SecretsPath, cmapi.CertificateKind: webhook.CertificatesPath, "KubernetesCluster": webhook.ClustersPath}[obj.GetObjectKind().GroupVersionKind().Kind]
	raw, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	return handlers[path].Handle(t.Context(), admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
		UID: "offline", Operation: admissionv1.Create, Namespace: obj.GetNamespace(), Name: obj.GetName(),
		Object: runtime.RawExtension{Raw: raw},
	}})
}

// TestOfflineValidatorReadsTheRootThroughItsReader checks that a client
// chain is checked against whatever root the reader serves: none, the
// secret's own root, or another one.
func TestOfflineValidatorReadsTheRootThroughItsReader(t *testing.T) {
	f := newPKI(t)
	other := newPKI(t)
	scheme, err := scheme.Scheme()
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.DefaultWebhook()
	cfg.Cluster = cluster
	sec := tlsSecret(t, ns, config.DefaultClientTLSSecret, f.client(t, cluster, pki.Options{}), f.root.CAPEM())
	for _, tc := range []struct {
		name  string
		roots []client.Object
		deny  bool
	}{
		{"without a root secret the chain to ca.crt is enough", nil, false},
		{"with the secret's own root it is admitted", []client.Object{f.rootSecret(t)}, false},
		{"with another root it is denied", []client.Object{tlsSecret(t, ns, config.DefaultRootTLSSecret, other.root, other.root.CAPEM())}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reader := fake.NewClientBuilder().WithScheme(scheme).WithObjects(tc.roots...).Build()
			v := webhook.NewValidator(&cfg, reader, clocktesting.NewFakePassiveClock(f.now))
			denials, _, err := v.Secret(t.Context(), sec)
			if err != nil {
				t.Fatal(err)
			}
			if (len(denials) > 0) != tc.deny {
				t.Errorf("denials = %q, want denied %v", denials, tc.deny)
			}
		})
	}
}
