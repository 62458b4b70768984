package server

import (
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/meshrelay/meshrelay/internal/scheme"
	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/pkg/pki"
	"github.com/meshrelay/meshrelay/pkg/relaysecret"
)

// TestTheTrustBundleIsTheRelayRootWhileItVerifiesTheServer: the bundle
// pushed to agents is relay-root-tls-secret's ca.crt alone (not the server
// secret's ca.crt beside it), and none is pushed while the serving
// certificate does not chain to it, since an agent that took it would no
// longer verify the server.
func TestTheTrustBundleIsTheRelayRootWhileItVerifiesTheServer(t *testing.T) {
	now := time.Now()
	relayRoot, err := pki.NewRootCA(pki.Options{CommonName: "relay root", TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	otherRoot, err := pki.NewRootCA(pki.Options{CommonName: "another root", TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.DefaultServer()
	cfg.DisableCa, cfg.ClientIssuerSecret = true, "issuers"
	secret := func(name string, data map[string][]byte) *corev1.Secret {
		return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: cfg.Namespace, Name: name}, Data: data}
	}
	serverSecret := func(root *pki.Certified, extraCA []byte) *corev1.Secret {
		c, err := root.IssueServer(pki.Options{DNSNames: []string{cfg.Authority}, TTL: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		key, _ := c.KeyPEM()
		return secret(cfg.TLSSecret.Name, map[string][]byte{relaysecret.KeyTLSCert: c.CertPEM(), relaysecret.KeyTLSKey: key,
			relaysecret.KeyCACert: append(c.CAPEM(), extraCA...)})
	}
	load := func(server *corev1.Secret) (*keyring, error) {
		s, _ := scheme.Scheme()
		c := fake.NewClientBuilder().WithScheme(s).WithObjects(
			secret(cfg.RootTLSSecret.Name, map[string][]byte{relaysecret.KeyCACert: relayRoot.CertPEM()}),
			secret(cfg.TokenSecret.Name, map[string][]byte{cfg.TokenSecret.Key: []byte(strings.Repeat("t", 43))}),
			secret("issuers", map[string][]byte{relaysecret.KeyCACert: relayRoot.CertPEM()}),
			server).Build()
		keys := newKeyring(&cfg, newMetrics(prometheus.NewRegistry()))
		return keys, keys.load(t.Context(), c, now, logr.Discard())
	}

	keys, err := load(serverSecret(relayRoot, otherRoot.CertPEM()))
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	bundle, err := pki.DecodeCertificates(*keys.rootPEM.Load())
	if err != nil || len(bundle) != 1 || !bundle[0].Equal(relayRoot.Cert) {
		t.Errorf("bundle %d certificates (%v), want the relay root alone, not the other root of the server secret's ca.crt", len(bundle), err)
	}

	keys, err = load(serverSecret(otherRoot, nil))
	if keys.rootPEM.Load() != nil {
		t.Error("a bundle was pushed that does not verify the serving certificate")
	}
	if err == nil || !strings.Contains(err.Error(), "not sent a trust bundle") || !strings.Contains(err.Error(), cfg.RootTLSSecret.Name) {
		t.Errorf("load: %v, want the reason no bundle is sent, naming %s", err, cfg.RootTLSSecret.Name)
	}
}
