package relaysecret_test

import (
	"crypto/x509"
	"strings"
	"testing"
	"time"

	"github.com/meshrelay/meshrelay/internal/relaysecrettest"
	"github.com/meshrelay/meshrelay/pkg/pki"
	"github.com/meshrelay/meshrelay/pkg/relaysecret"
)

// TestASecretWithoutCACertVerifiesToTheStoredRoot judges signing, server
// and client secrets as `kubectl create secret tls` writes them (tls.crt
// and tls.key, no ca.crt): usable with a warning when the chain verifies
// to the roots of the context (relay-root-tls-secret's ca.crt), refused
// saying so when it does not, and refused naming ca.crt and the root
// secret when there are no such roots.
func TestASecretWithoutCACertVerifiesToTheStoredRoot(t *testing.T) {
	f := relaysecrettest.New(t)
	other, err := pki.NewRootCA(pki.Options{CommonName: "other-root", TTL: time.Hour, Now: f.Now})
	if err != nil {
		t.Fatal(err)
	}
	otherSigning, err := other.NewIntermediateCA(pki.Options{CommonName: "other-signing", TTL: time.Hour, Now: f.Now})
	if err != nil {
		t.Fatal(err)
	}
	issue := func(ca *pki.Certified, kind relaysecret.Kind) map[string][]byte {
		t.Helper()
		var c *pki.Certified
		switch kind {
		case relaysecret.Signing:
			c = ca
		case relaysecret.Server:
			c, err = ca.IssueServer(pki.Options{DNSNames: []string{"*.gloo-mesh"}, TTL: time.Hour, Now: f.Now})
		case relaysecret.Client:
			c, err = ca.IssueClient(pki.Options{DNSNames: []string{relaysecrettest.Cluster}, TTL: time.Hour, Now: f.Now})
		}
		if err != nil {
			t.Fatal(err)
		}
		data := f.TLSData(t, c)
		delete(data, relaysecret.KeyCACert)
		return data
	}
	stored := relaysecret.Context{Authority: relaysecrettest.Authority, Cluster: relaysecrettest.Cluster, Roots: []*x509.Certificate{f.Root.Cert}, RootsFrom: "relay-root-tls-secret", Now: f.Now}
	noRoots := stored
	noRoots.Roots = nil
	bare := relaysecret.Context{Authority: relaysecrettest.Authority, Cluster: relaysecrettest.Cluster, Now: f.Now}
	for _, kind := range []relaysecret.Kind{relaysecret.Signing, relaysecret.Server, relaysecret.Client} {
		t.Run(kind.String()+" under the stored root is usable with a warning", func(t *testing.T) {
			m, r := relaysecret.Validate(kind, issue(f.Signing, kind), "", stored)
			if m == nil {
				t.Fatalf("refused: %v", r.Err())
			}
			if len(r.Warnings) != 1 || !strings.Contains(r.Warnings[0], "data[ca.crt] is missing, so tls.crt was verified against relay-root-tls-secret's ca.crt") {
				t.Fatalf("warnings %q, want one saying ca.crt is missing and what was used instead", r.Warnings)
			}
			if len(m.Roots) != 1 || !m.Roots[0].Equal(f.Root.Cert) {
				t.Fatalf("roots %v, want the stored root", m.Roots)
			}
		})
		otherKind := otherSigning
		t.Run(kind.String()+" from another root is refused", func(t *testing.T) {
			_, r := relaysecret.Validate(kind, issue(otherKind, kind), "", stored)
			want := "data[tls.crt]: the secret has no ca.crt, and the chain does not verify to relay-root-tls-secret's ca.crt"
			if r.OK() || !strings.Contains(r.Err().Error(), want) {
				t.Fatalf("error %v, want one containing %q", r.Err(), want)
			}
		})
		t.Run(kind.String()+" with no stored root is refused naming the root secret", func(t *testing.T) {
			_, r := relaysecret.Validate(kind, issue(f.Signing, kind), "", noRoots)
			want := "or create relay-root-tls-secret holding it"
			if r.OK() || !strings.Contains(r.Err().Error(), "data[ca.crt]: missing") || !strings.Contains(r.Err().Error(), want) {
				t.Fatalf("error %v, want ca.crt missing and %q", r.Err(), want)
			}
		})
		t.Run(kind.String()+" checked without a root secret is refused as before", func(t *testing.T) {
			_, r := relaysecret.Validate(kind, issue(f.Signing, kind), "", bare)
			if r.OK() || r.Err().Error() != "data[ca.crt]: missing: "+map[bool]string{true: "add the root CA certificate that signed the intermediate", false: "add the root CA certificate that signed the chain"}[kind == relaysecret.Signing] {
				t.Fatalf("error %v, want only the missing ca.crt", r.Err())
			}
		})
	}
}
