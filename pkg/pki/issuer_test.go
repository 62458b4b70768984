package pki

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"strings"
	"testing"
	"time"
)

func TestSameCAComparesSubjectAndKeyNotNames(t *testing.T) {
	p := newTestPKI(t, ECDSAP256)
	// The same intermediate re-issued with its key kept: same CA.
	tmpl := *p.inter.Cert
	tmpl.NotAfter = p.inter.Cert.NotAfter.Add(-time.Hour)
	der, err := x509.CreateCertificate(rand.Reader, &tmpl, p.root.Cert, p.inter.Key.Public(), p.root.Key)
	if err != nil {
		t.Fatal(err)
	}
	reissued, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	// Another CA under the same root with the same name and its own key.
	impostor, err := p.root.NewIntermediateCA(Options{CommonName: "relay-signing", TTL: time.Hour, Now: t0})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		a, b *Certified
		want bool
	}{
		{"a CA is itself", p.inter, p.inter, true},
		{"a CA re-issued with the same key is the same CA", p.inter, &Certified{Cert: reissued}, true},
		{"a CA of the same name with another key is another CA", p.inter, impostor, false},
		{"the root is not its intermediate", p.root, p.inter, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := SameCA(c.a.Cert, c.b.Cert); got != c.want {
				t.Errorf("SameCA = %v, want %v", got, c.want)
			}
		})
	}
	if SameCA(nil, p.inter.Cert) || ContainsCA(nil, p.inter.Cert) {
		t.Error("nil is no CA")
	}
}

func TestDirectIssuerFindsTheCAThatSigned(t *testing.T) {
	p := newTestPKI(t, ECDSAP256)
	leaf, err := p.inter.IssueClient(Options{DNSNames: []string{"cluster-1"}, TTL: time.Hour, Now: t0})
	if err != nil {
		t.Fatal(err)
	}
	// Same name as the real intermediate, another key: it did not sign.
	impostor, err := p.root.NewIntermediateCA(Options{CommonName: "relay-signing", TTL: time.Hour, Now: t0})
	if err != nil {
		t.Fatal(err)
	}
	got, err := DirectIssuer(leaf.Cert, []*x509.Certificate{impostor.Cert, p.root.Cert, p.inter.Cert})
	if err != nil || !got.Equal(p.inter.Cert) {
		t.Errorf("DirectIssuer = %v, %v; want the intermediate", got, err)
	}
	if _, err := DirectIssuer(leaf.Cert, []*x509.Certificate{impostor.Cert, p.root.Cert}); err == nil {
		t.Error("DirectIssuer found an issuer among certificates that did not sign the leaf")
	}
}

func TestCANameIsTheCommonNameAndTheStartOfTheFingerprint(t *testing.T) {
	p := newTestPKI(t, ECDSAP256)
	// Same name as the real intermediate, another key.
	impostor, err := p.root.NewIntermediateCA(Options{CommonName: "relay-signing", TTL: time.Hour, Now: t0})
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(p.inter.Cert.Raw)
	want := `"relay-signing" (SHA-256 ` + hex.EncodeToString(sum[:])[:16] + ")"
	if got := CAName(p.inter.Cert); got != want {
		t.Errorf("CAName = %s, want %s", got, want)
	}
	if got := CAName(impostor.Cert); got == want || !strings.HasPrefix(got, `"relay-signing" (SHA-256 `) {
		t.Errorf("CAName of another CA of the same name = %s, want the same name with another fingerprint than %s", got, want)
	}
}
