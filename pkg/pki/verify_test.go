package pki

import (
	"crypto/x509"
	"testing"
	"time"
)

func TestVerifyChainUsesTheUsagesOfTheRole(t *testing.T) {
	p := newTestPKI(t, ECDSAP256)
	other := newTestPKI(t, ECDSAP256)
	srv, _ := p.inter.IssueServer(Options{DNSNames: []string{"*.gloo-mesh"}, TTL: time.Hour, Now: t0})
	cli, _ := p.inter.IssueClient(Options{DNSNames: []string{"cluster-1"}, TTL: time.Hour, Now: t0})
	short, _ := p.inter.IssueClient(Options{DNSNames: []string{"cluster-1"}, TTL: time.Minute, Now: t0})
	noSign := *p.inter.Cert
	noSign.KeyUsage = x509.KeyUsageDigitalSignature
	inter := []*x509.Certificate{p.inter.Cert}
	roots := []*x509.Certificate{p.root.Cert}
	for _, tc := range []struct {
		name  string
		cert  *x509.Certificate
		inter []*x509.Certificate
		roots []*x509.Certificate
		role  Role
		now   time.Time
		want  string
	}{
		{"a client certificate verifies as a client", cli.Cert, inter, roots, RoleClient, t0, ""},
		{"a server certificate verifies as a server", srv.Cert, inter, roots, RoleServer, t0, ""},
		{"a server certificate does not verify as a client", srv.Cert, inter, roots, RoleClient, t0, "incompatible key usage"},
		{"a client certificate does not verify as a server", cli.Cert, inter, roots, RoleServer, t0, "incompatible key usage"},
		{"a chain to another root does not verify", cli.Cert, inter, []*x509.Certificate{other.root.Cert}, RoleClient, t0, "does not verify to the root CA"},
		{"a missing intermediate is named", cli.Cert, nil, roots, RoleClient, t0, "unknown authority"},
		{"an empty ca.crt is named", cli.Cert, inter, nil, RoleClient, t0, "ca.crt is empty"},
		{"an expired leaf says when it expired", short.Cert, inter, roots, RoleClient, t0.Add(time.Hour), "certificate expired at 2026-06-01T12:01:00Z"},
		{"a CA is refused as a client", p.inter.Cert, nil, roots, RoleClient, t0, "is a CA: a client certificate must not be one"},
		{"a leaf is refused as a signing CA", cli.Cert, inter, roots, RoleSigningCA, t0, "is not a CA"},
		{"a CA without keyCertSign is refused", &noSign, nil, roots, RoleSigningCA, t0, "add the keyCertSign key usage"},
		{"the intermediate verifies as a signing CA", p.inter.Cert, nil, roots, RoleSigningCA, t0, ""},
		{"the root verifies as a root", p.root.Cert, nil, nil, RoleRoot, t0, ""},
		{"an intermediate is not a root", p.inter.Cert, nil, nil, RoleRoot, t0, "is not self-signed"},
		{"an expired root is refused", p.root.Cert, nil, nil, RoleRoot, p.root.Cert.NotAfter.Add(time.Hour), "expired"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			chain, err := VerifyChain(tc.cert, tc.inter, tc.roots, tc.role, tc.now)
			wantErr(t, err, tc.want)
			if tc.want == "" && (len(chain) == 0 || !chain[0].Equal(tc.cert)) {
				t.Errorf("verified chain %v does not start with the certificate", chain)
			}
		})
	}
	for _, r := range []Role{RoleRoot, RoleSigningCA, RoleServer, RoleClient, Role(9)} {
		if r.String() == "" {
			t.Errorf("Role(%d) has no name", r)
		}
	}
}
