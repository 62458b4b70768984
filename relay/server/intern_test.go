package server

import (
	"crypto/x509"
	"testing"
	"time"
	"unsafe"

	"github.com/meshrelay/meshrelay/pkg/pki"
)

// TestClusterRecordsShareIssuerAndRootStrings checks that the records of
// many clusters under one CA hold one copy of its fingerprints and name,
// as each connection parses its own copy of the chain.
func TestClusterRecordsShareIssuerAndRootStrings(t *testing.T) {
	root, err := pki.NewRootCA(pki.Options{CommonName: "root", TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	inter, err := root.NewIntermediateCA(pki.Options{CommonName: "signing", TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	// parsed is what one connection's handshake holds: its own copies.
	parsed := func(cluster string) []*x509.Certificate {
		leaf, err := inter.IssueClient(pki.Options{DNSNames: []string{cluster}, TTL: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		var chain []*x509.Certificate
		for _, c := range []*x509.Certificate{leaf.Cert, inter.Cert, root.Cert} {
			again, err := x509.ParseCertificate(c.Raw)
			if err != nil {
				t.Fatal(err)
			}
			chain = append(chain, again)
		}
		return chain
	}
	conns := newConnections()
	for _, cluster := range []string{"cluster-1", "cluster-2"} {
		chain := parsed(cluster)
		conns.open(cluster, connectStream, nil, chain[0], chain)
		conns.setTrustBundle(cluster, pki.Fingerprint(root.Cert))
	}
	one, two := conns.view("cluster-1"), conns.view("cluster-2")
	if one.cert == nil || two.cert == nil || one.cert.rootSHA256 != pki.Fingerprint(root.Cert) {
		t.Fatalf("summaries %+v, %+v: want the chain's fingerprints", one.cert, two.cert)
	}
	for _, f := range []struct {
		what     string
		one, two string
	}{
		{"issuer SHA-256", one.cert.issuerSHA256, two.cert.issuerSHA256},
		{"root SHA-256", one.cert.rootSHA256, two.cert.rootSHA256},
		{"issuer name", one.cert.issuer, two.cert.issuer},
		{"trust bundle", one.trustBundle, two.trustBundle},
	} {
		if f.one != f.two || unsafe.StringData(f.one) != unsafe.StringData(f.two) {
			t.Errorf("%s: %q and %q are separate copies, want one shared string", f.what, f.one, f.two)
		}
	}
}
