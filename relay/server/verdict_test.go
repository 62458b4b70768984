package server

import (
	"crypto/tls"
	"crypto/x509"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshrelay/meshrelay/internal/relaysecrettest"
	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/pkg/relaysecret"
)

// TestServerGivesTheCatalogueVerdicts loads every secret of the shared
// table that relay-server loads (root, signing, server, token) as it loads
// them when they change: the usable ones load, the others are refused. The
// webhook, relay-agent and relayctl judge the same table.
func TestServerGivesTheCatalogueVerdicts(t *testing.T) {
	f := relaysecrettest.New(t)
	cfg := config.DefaultServer()
	cfg.Namespace, cfg.Authority = "gloo-mesh", relaysecrettest.Authority
	keys := newKeyring(&cfg, newMetrics(prometheus.NewRegistry()))
	// The stored root, which a secret without ca.crt verifies to, as
	// relay-server loads relay-root-tls-secret before the others.
	if _, err := keys.loadRoot(&corev1.Secret{Data: f.RootData}, f.Now); err != nil {
		t.Fatal(err)
	}
	loaders := map[relaysecret.Kind]func(*corev1.Secret) error{
		relaysecret.Root: func(s *corev1.Secret) error { _, err := keys.loadRoot(s, f.Now); return err },
		relaysecret.Signing: func(s *corev1.Secret) error {
			_, err := keys.loadSigning(s, f.Now)
			return err
		},
		relaysecret.Server: func(s *corev1.Secret) error { _, err := keys.loadServer(s, f.Now); return err },
		relaysecret.Token:  func(s *corev1.Secret) error { _, err := keys.loadToken(s, f.Now); return err },
	}
	n := 0
	for _, c := range f.Cases(t) {
		load, ok := loaders[c.Kind]
		if !ok {
			continue
		}
		n++
		t.Run(c.Name, func(t *testing.T) {
			err := load(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: cfg.Namespace, Name: c.Kind.DefaultName()}, Data: c.Data})
			if loaded := err == nil; loaded != c.OK {
				t.Errorf("loaded = %v, want %v (error: %v)", loaded, c.OK, err)
			}
		})
	}
	if n < 6 {
		t.Fatalf("the table has %d secrets the server loads, want good and bad ones of each kind", n)
	}
}

// TestAWeakClientKeyFailsTheHandshakeCheck: a client certificate whose key
// is weaker than RSA 2048 is refused at the handshake even though its chain
// verifies; a good one passes.
func TestAWeakClientKeyFailsTheHandshakeCheck(t *testing.T) {
	f := relaysecrettest.New(t)
	cfg := config.DefaultServer()
	keys := newKeyring(&cfg, newMetrics(prometheus.NewRegistry()))
	// The table's client certificates come from its signing CA, which the
	// server admits client certificates from once it is loaded.
	if _, err := keys.loadSigning(&corev1.Secret{Data: f.TLSData(t, f.Signing)}, f.Now); err != nil {
		t.Fatal(err)
	}
	ci, _ := keys.buildClientIssuers([]*x509.Certificate{f.Root.Cert}, f.Now)
	keys.clientIssuers.Store(ci)
	want := map[string]bool{
		"a client certificate for this cluster is usable":      true,
		"a client certificate with an RSA-1024 key is refused": false,
	}
	for _, c := range f.Cases(t) {
		ok, judged := want[c.Name]
		if !judged {
			continue
		}
		delete(want, c.Name)
		m, errs := relaysecret.Decode(c.Kind, c.Data, "")
		if len(errs) > 0 {
			t.Fatalf("%s: %v", c.Name, errs)
		}
		chain := append([]*x509.Certificate{m.Cert}, append(m.Chain, m.Roots...)...)
		err := keys.verifyClient(tls.ConnectionState{PeerCertificates: chain[:1], VerifiedChains: [][]*x509.Certificate{chain}})
		if (err == nil) != ok {
			t.Errorf("%s: handshake check error %v, want accepted = %v", c.Name, err, ok)
		}
	}
	if len(want) > 0 {
		t.Fatalf("cases missing from the table: %v", want)
	}
}
