package webhook_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1alpha1 "github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/pkg/pki"
)

func TestIstioCACertsKubernetesClustersAndCertificatesThroughKubectl(t *testing.T) {
	e := startWebhook(t, false)
	f := newPKI(t)
	other := newPKI(t)
	dryRun := []string{"--dry-run=server"}

	cacerts := func(ca *pki.Certified, key *pki.Certified, chain []byte, root []byte) string {
		k, err := key.KeyPEM()
		if err != nil {
			t.Fatal(err)
		}
		return toYAML(t, &corev1.Secret{
			TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
			ObjectMeta: metav1.ObjectMeta{Namespace: config.DefaultIstioNamespace, Name: config.DefaultIstioCASecret},
			Data: map[string][]byte{
				"ca-cert.pem": pki.EncodeCertificates(ca.Cert), "ca-key.pem": k,
				"cert-chain.pem": chain, "root-cert.pem": root,
			},
		})
	}
	istioCA, err := f.root.NewIntermediateCA(pki.Options{CommonName: "istio-ca-cluster-1", TTL: year})
	if err != nil {
		t.Fatal(err)
	}
	leaf := f.client(t, "cluster-1", pki.Options{})
	t.Run("Istio cacerts chaining to root-cert.pem is admitted", func(t *testing.T) {
		e.mustApply(t, cacerts(istioCA, istioCA, istioCA.CertPEM(), f.root.CAPEM()))
	})
	for _, tc := range []struct {
		name     string
		manifest string
		want     string
	}{
		{"Istio cacerts whose ca-cert.pem is not a CA is denied",
			cacerts(leaf, leaf, leaf.CertPEM(), f.root.CAPEM()), "is not a CA"},
		{"Istio cacerts whose key belongs to another CA is denied",
			cacerts(istioCA, other.signing, istioCA.CertPEM(), f.root.CAPEM()), "data[ca-key.pem]: private key does not match"},
		{"Istio cacerts whose chain does not reach root-cert.pem is denied",
			cacerts(istioCA, istioCA, istioCA.CertPEM(), other.root.CAPEM()), "data[cert-chain.pem]: does not verify to root-cert.pem"},
	} {
		t.Run(tc.name, func(t *testing.T) { e.wantDenied(t, tc.manifest, dryRun, tc.want) })
	}

	kubernetesCluster := func(name string) string {
		return toYAML(t, &meshv1alpha1.KubernetesCluster{
			TypeMeta:   metav1.TypeMeta{APIVersion: meshv1alpha1.GroupVersion.String(), Kind: "KubernetesCluster"},
			ObjectMeta: metav1.ObjectMeta{Namespace: config.DefaultNamespace, Name: name},
		})
	}
	t.Run("a KubernetesCluster named by a DNS-1123 label is admitted", func(t *testing.T) {
		e.mustApply(t, kubernetesCluster("cluster-9"))
	})
	t.Run("a KubernetesCluster whose name has a dot is refused with the reason", func(t *testing.T) {
		// The CRD's own rule refuses it before validating webhooks run; the
		// webhook's check (TestKubernetesClusterHandler) covers clusters
		// whose installed CRD predates that rule.
		_, stderr, err := e.apply(kubernetesCluster("cluster.one"))
		if err == nil || !strings.Contains(stderr, "must be a DNS-1123 label") {
			t.Errorf("apply: %v, %q: want a refusal naming the DNS-1123 label rule", err, stderr)
		}
	})

	certificate := func(secret string, mutate func(*cmapi.CertificateSpec)) string {
		c := &cmapi.Certificate{
			TypeMeta:   metav1.TypeMeta{APIVersion: cmapi.SchemeGroupVersion.String(), Kind: "Certificate"},
			ObjectMeta: metav1.ObjectMeta{Namespace: config.DefaultNamespace, Name: "relay-" + fmt.Sprint(time.Now().UnixNano())},
			Spec: cmapi.CertificateSpec{
				SecretName: secret,
				DNSNames:   []string{"cluster-1"},
				Usages:     []cmapi.KeyUsage{cmapi.UsageDigitalSignature, cmapi.UsageKeyEncipherment, cmapi.UsageClientAuth},
				IssuerRef:  cmmeta.IssuerReference{Name: "relay-issuer", Kind: "Issuer"},
			},
		}
		if mutate != nil {
			mutate(&c.Spec)
		}
		return toYAML(t, c)
	}
	t.Run("a cert-manager Certificate for the client secret with this cluster's name is admitted", func(t *testing.T) {
		e.mustApply(t, certificate(config.DefaultClientTLSSecret, nil))
	})
	t.Run("a cert-manager Certificate for an unrelated secret is not the relay's business", func(t *testing.T) {
		e.mustApply(t, certificate("some-app-tls", func(s *cmapi.CertificateSpec) { s.DNSNames = []string{"app"}; s.Usages = nil }))
	})
	for _, tc := range []struct {
		name   string
		secret string
		mutate func(*cmapi.CertificateSpec)
		want   []string
	}{
		{"a client Certificate for another cluster is denied", config.DefaultClientTLSSecret,
			func(s *cmapi.CertificateSpec) { s.DNSNames = []string{"cluster-2"} }, []string{`spec.dnsNames: [cluster-2] does not hold this cluster's name "cluster-1"`}},
		{"a client Certificate whose usages leave out client auth is denied", config.DefaultClientTLSSecret,
			func(s *cmapi.CertificateSpec) { s.Usages = []cmapi.KeyUsage{cmapi.UsageServerAuth} },
			[]string{`spec.usages: [server auth] does not include "client auth", and relay-server refuses`}},
		{"a server Certificate whose usages leave out server auth, not covering the authority, is denied", config.DefaultServerTLSSecret,
			func(s *cmapi.CertificateSpec) { s.DNSNames = []string{"relay.example.com"} },
			[]string{`do not cover the authority "gloo-mesh-mgmt-server.gloo-mesh"`, `does not include "server auth"`}},
		{"a Certificate with an underscore in a DNS name is denied", config.DefaultClientTLSSecret,
			func(s *cmapi.CertificateSpec) { s.DNSNames = []string{"cluster_1"} }, []string{`spec.dnsNames[0]`, "contains an underscore"}},
		{"a Certificate that renews before it is issued is denied", config.DefaultClientTLSSecret,
			func(s *cmapi.CertificateSpec) {
				s.Duration = &metav1.Duration{Duration: 24 * time.Hour}
				s.RenewBefore = &metav1.Duration{Duration: 48 * time.Hour}
			}, []string{"spec.renewBefore: 48h0m0s is not shorter than the duration 24h0m0s"}},
		{"a signing Certificate that is not a CA is denied", config.DefaultSigningTLSSecret,
			nil, []string{"spec.isCA: must be true"}},
	} {
		t.Run(tc.name, func(t *testing.T) { e.wantDenied(t, certificate(tc.secret, tc.mutate), dryRun, tc.want...) })
	}
}
