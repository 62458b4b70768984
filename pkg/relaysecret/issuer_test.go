package relaysecret_test

import (
	"crypto/x509"
	"strings"
	"testing"
	"time"

	"github.com/meshrelay/meshrelay/pkg/pki"
	"github.com/meshrelay/meshrelay/pkg/relaysecret"
)

func TestMaterialIssuerLooksInTheChainThenCACertThenTheCallersRoots(t *testing.T) {
	now := time.Now()
	opts := func(cn string) pki.Options { return pki.Options{CommonName: cn, TTL: 24 * time.Hour, Now: now} }
	root, err := pki.NewRootCA(opts("relay root"))
	if err != nil {
		t.Fatal(err)
	}
	signing, err := root.NewIntermediateCA(opts("relay signing"))
	if err != nil {
		t.Fatal(err)
	}
	// Another CA of the same name under the same root: it signed nothing.
	impostor, err := root.NewIntermediateCA(opts("relay signing"))
	if err != nil {
		t.Fatal(err)
	}
	fromSigning, err := signing.IssueClient(pki.Options{DNSNames: []string{"cluster-1"}, TTL: time.Hour, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	fromRoot, err := root.IssueClient(pki.Options{DNSNames: []string{"cluster-1"}, TTL: time.Hour, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	certs := func(c ...*pki.Certified) []*x509.Certificate {
		var out []*x509.Certificate
		for _, x := range c {
			out = append(out, x.Cert)
		}
		return out
	}
	for _, c := range []struct {
		name  string
		m     *relaysecret.Material
		extra []*x509.Certificate
		want  *pki.Certified // nil: an error
	}{
		{"the issuer after the certificate in tls.crt", &relaysecret.Material{Cert: fromSigning.Cert, Chain: certs(impostor, signing), Roots: certs(root)}, nil, signing},
		{"a root in ca.crt that signed the certificate directly", &relaysecret.Material{Cert: fromRoot.Cert, Roots: certs(root)}, nil, root},
		{"a root the caller trusts when tls.crt and ca.crt do not hold it", &relaysecret.Material{Cert: fromRoot.Cert}, certs(root), root},
		{"the signing CA passed by the caller when tls.crt holds the leaf alone", &relaysecret.Material{Cert: fromSigning.Cert, Roots: certs(root)}, certs(impostor, signing), signing},
		{"none when only a CA of the same name with another key is at hand", &relaysecret.Material{Cert: fromSigning.Cert, Chain: certs(impostor), Roots: certs(root)}, nil, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := c.m.Issuer(c.extra...)
			if c.want == nil {
				if err == nil || !strings.Contains(err.Error(), "tls.crt") || !strings.Contains(err.Error(), "ca.crt") {
					t.Errorf("Issuer = %s, %v; want an error saying to fix tls.crt or ca.crt", pki.CAName(got), err)
				}
				return
			}
			if err != nil || !got.Equal(c.want.Cert) {
				t.Errorf("Issuer = %s, %v; want %s", pki.CAName(got), err, pki.CAName(c.want.Cert))
			}
		})
	}
}
