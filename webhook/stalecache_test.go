package webhook

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/meshrelay/meshrelay/internal/scheme"
	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/pkg/pki"
	"github.com/meshrelay/meshrelay/pkg/relaysecret"
)

// TestDenialIsConfirmedFromTheAPIServer replays what an operator replacing
// the relay PKI in one kubectl apply does: relay-root-tls-secret is written
// with a new root, and a moment later relay-tls-signing-secret with an
// intermediate under it, before the webhook's cache has seen the first
// write. The signing secret must be admitted on what is stored, and denied
// when what is stored really is the old root.
func TestDenialIsConfirmedFromTheAPIServer(t *testing.T) {
	s, err := scheme.Scheme()
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.DefaultWebhook()
	now := time.Now()
	newRoot := func() *pki.Certified {
		// Both roots have the same name, as relay-server's do.
		r, err := pki.NewRootCA(pki.Options{CommonName: relaysecret.RootCommonName, TTL: time.Hour, Now: now.Add(-time.Minute)})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	oldRoot, root := newRoot(), newRoot()
	signing, err := root.NewIntermediateCA(pki.Options{CommonName: relaysecret.SigningCommonName, TTL: time.Hour, Now: now.Add(-time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	secret := func(name string, c *pki.Certified) *corev1.Secret {
		key, err := c.KeyPEM()
		if err != nil {
			t.Fatal(err)
		}
		return &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: cfg.Namespace, Name: name},
			Type:       corev1.SecretTypeTLS,
			Data:       map[string][]byte{relaysecret.KeyTLSCert: c.CertPEM(), relaysecret.KeyTLSKey: key, relaysecret.KeyCACert: c.CAPEM()},
		}
	}
	holding := func(root *pki.Certified) client.Reader {
		return fake.NewClientBuilder().WithScheme(s).WithObjects(secret(cfg.RootTLSSecret.Name, root)).Build()
	}
	stale, stored := holding(oldRoot), holding(root)
	sec := secret(cfg.SigningTLSSecret.Name, signing)
	validate := func(cached, live client.Reader) *problems {
		t.Helper()
		p, err := (&secrets{cfg: &cfg, reader: cached, live: live, now: time.Now}).validate(t.Context(), sec, nil)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}

	// Without the second look the lagging cache denies it.
	if p := validate(stale, nil); !strings.Contains(p.errs.ToAggregate().Error(), "does not chain to "+cfg.RootTLSSecret.Name) {
		t.Fatalf("a cache that still holds the old root must deny the intermediate under the new one; got %q", p.errs)
	}
	if p := validate(stale, stored); len(p.errs) != 0 {
		t.Errorf("the signing secret under the stored root was denied on the cache's old root: %q", p.errs)
	}
	// The second look reads what is stored, and what is stored denies.
	if p := validate(stale, stale); len(p.errs) == 0 {
		t.Error("the signing secret was admitted though the stored root is not its own")
	}
}
