package pki

import (
	"crypto/x509"
	"net"
	"testing"
	"time"
)

func TestGenerateMakesEachRoleWithEveryKey(t *testing.T) {
	for _, spec := range []KeySpec{{}, ECDSAP384, RSA2048, RSA3072, Ed25519Key} {
		t.Run(spec.String(), func(t *testing.T) {
			p := newTestPKI(t, spec)
			if !p.root.Cert.IsCA || p.root.Root() != p.root.Cert || len(p.root.Issuers) != 0 {
				t.Error("root is not a self-standing CA")
			}
			if !p.inter.Cert.IsCA || p.inter.Cert.MaxPathLen != 0 || !p.inter.Cert.MaxPathLenZero {
				t.Errorf("intermediate: IsCA=%v MaxPathLen=%d MaxPathLenZero=%v, want a CA with path length 0", p.inter.Cert.IsCA, p.inter.Cert.MaxPathLen, p.inter.Cert.MaxPathLenZero)
			}
			if _, err := VerifyChain(p.inter.Cert, nil, []*x509.Certificate{p.root.Cert}, RoleSigningCA, t0); err != nil {
				t.Errorf("intermediate does not verify as a signing CA: %v", err)
			}
			srv, err := p.inter.IssueServer(Options{DNSNames: []string{"*.gloo-mesh", "gloo-mesh-mgmt-server.gloo-mesh"}, TTL: time.Hour, Key: spec, Now: t0})
			if err != nil {
				t.Fatalf("IssueServer: %v", err)
			}
			if _, err := VerifyChain(srv.Cert, []*x509.Certificate{p.inter.Cert}, []*x509.Certificate{p.root.Cert}, RoleServer, t0); err != nil {
				t.Errorf("server does not verify: %v", err)
			}
			cli, err := p.inter.IssueClient(Options{DNSNames: []string{"cluster-1"}, TTL: time.Hour, Key: spec, Now: t0})
			if err != nil {
				t.Fatalf("IssueClient: %v", err)
			}
			if _, err := VerifyChain(cli.Cert, []*x509.Certificate{p.inter.Cert}, []*x509.Certificate{p.root.Cert}, RoleClient, t0); err != nil {
				t.Errorf("client does not verify: %v", err)
			}
			if cli.Cert.Subject.CommonName != "cluster-1" {
				t.Errorf("client common name = %q, want the first DNS name", cli.Cert.Subject.CommonName)
			}
			if got, _ := KeySpecOf(cli.Cert.PublicKey); got != spec.orDefault() {
				t.Errorf("client key = %s, want %s", got, spec.orDefault())
			}
			if err := checkLeafPEM(cli.CertPEM(), must(cli.KeyPEM()), cli.CAPEM(), RoleClient, "cluster-1"); err != nil {
				t.Errorf("client PEM does not validate as a secret: %v", err)
			}
		})
	}
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

func TestIssuedCertificatesStayInsideTheirIssuer(t *testing.T) {
	p := newTestPKI(t, ECDSAP256)
	long, err := p.inter.IssueClient(Options{DNSNames: []string{"cluster-1"}, TTL: 100 * 365 * 24 * time.Hour, Now: t0})
	if err != nil {
		t.Fatal(err)
	}
	if !long.Cert.NotAfter.Equal(p.inter.Cert.NotAfter) {
		t.Errorf("NotAfter = %s, want capped at the issuer's %s", long.Cert.NotAfter, p.inter.Cert.NotAfter)
	}
	early, err := p.inter.IssueClient(Options{DNSNames: []string{"cluster-1"}, TTL: time.Hour, Now: p.inter.Cert.NotBefore, Backdate: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if early.Cert.NotBefore.Before(p.inter.Cert.NotBefore) {
		t.Errorf("NotBefore %s is before the issuer's %s", early.Cert.NotBefore, p.inter.Cert.NotBefore)
	}
	nob, err := p.inter.IssueClient(Options{DNSNames: []string{"cluster-1"}, TTL: time.Hour, Now: t0, Backdate: -1})
	if err != nil {
		t.Fatal(err)
	}
	if !nob.Cert.NotBefore.Equal(t0) {
		t.Errorf("negative Backdate: NotBefore = %s, want %s", nob.Cert.NotBefore, t0)
	}
	def, _ := p.inter.IssueClient(Options{DNSNames: []string{"cluster-1"}, TTL: time.Hour, Now: t0})
	if want := t0.Add(-DefaultBackdate); !def.Cert.NotBefore.Equal(want) {
		t.Errorf("default NotBefore = %s, want %s", def.Cert.NotBefore, want)
	}
}

func TestGenerateRefusesBadOptions(t *testing.T) {
	p := newTestPKI(t, ECDSAP256)
	for _, tc := range []struct {
		name string
		run  func() error
		want string
	}{
		{"a root without a common name is refused", func() error { _, err := NewRootCA(Options{TTL: time.Hour}); return err }, "needs a common name"},
		{"an intermediate without a common name is refused", func() error { _, err := p.root.NewIntermediateCA(Options{TTL: time.Hour}); return err }, "needs a common name"},
		{"a zero TTL is refused", func() error { _, err := p.inter.IssueClient(Options{DNSNames: []string{"a"}}); return err }, "TTL 0s must be positive"},
		{"a leaf without DNS names is refused", func() error { _, err := p.inter.IssueClient(Options{TTL: time.Hour}); return err }, "needs at least one DNS name"},
		{"an underscore name is refused and named", func() error {
			_, err := p.inter.IssueClient(Options{DNSNames: []string{"cluster_1"}, TTL: time.Hour})
			return err
		}, `use "cluster-1"`},
		{"a wildcard client name is refused", func() error {
			_, err := p.inter.IssueClient(Options{DNSNames: []string{"*.gloo-mesh"}, TTL: time.Hour})
			return err
		}, `label "*"`},
		{"an unsupported key is refused", func() error {
			_, err := NewRootCA(Options{CommonName: "r", TTL: time.Hour, Key: KeySpec{RSA, 1024}})
			return err
		}, "unsupported key RSA 1024"},
		{"an expired issuer is refused", func() error {
			_, err := p.inter.IssueClient(Options{DNSNames: []string{"a"}, TTL: time.Hour, Now: p.inter.Cert.NotAfter.Add(time.Second)})
			return err
		}, "expired at"},
	} {
		t.Run(tc.name, func(t *testing.T) { wantErr(t, tc.run(), tc.want) })
	}
}

func TestCertPEMHoldsTheLeafAndIntermediatesButNotTheRoot(t *testing.T) {
	p := newTestPKI(t, ECDSAP256)
	cli, _ := p.inter.IssueClient(Options{DNSNames: []string{"cluster-1"}, TTL: time.Hour, Now: t0})
	certs, err := DecodeCertificates(cli.CertPEM())
	if err != nil {
		t.Fatal(err)
	}
	if len(certs) != 2 || !certs[0].Equal(cli.Cert) || !certs[1].Equal(p.inter.Cert) {
		t.Errorf("CertPEM holds %d certificates, want the leaf then the intermediate", len(certs))
	}
	root, err := DecodeCertificate(cli.CAPEM())
	if err != nil || !root.Equal(p.root.Cert) {
		t.Errorf("CAPEM is not the root: %v", err)
	}
	rootOnly, _ := DecodeCertificates(p.root.CertPEM())
	if len(rootOnly) != 1 {
		t.Errorf("a root's CertPEM holds %d certificates, want 1", len(rootOnly))
	}
}

func TestServerCertificatesCarryIPAddresses(t *testing.T) {
	p := newTestPKI(t, ECDSAP256)
	v4, v6 := net.IPv4(127, 0, 0, 1), net.ParseIP("fd00::1")
	for _, tc := range []struct {
		name  string
		issue func(Options) (*Certified, error)
		ips   []net.IP
		want  string // error, or empty for success
	}{
		{"a server certificate carries IPv4 and IPv6 addresses", p.inter.IssueServer, []net.IP{v4, v6}, ""},
		{"a server certificate without addresses carries none", p.inter.IssueServer, nil, ""},
		{"a client certificate is refused addresses", p.inter.IssueClient, []net.IP{v4}, "client certificate may not carry IP addresses"},
		{"a root is refused addresses", func(o Options) (*Certified, error) { o.CommonName = "r"; return NewRootCA(o) }, []net.IP{v4}, "root CA certificate may not carry IP addresses"},
		{"an intermediate is refused addresses", func(o Options) (*Certified, error) { o.CommonName = "i"; return p.root.NewIntermediateCA(o) }, []net.IP{v4}, "signing CA certificate may not carry IP addresses"},
		{"an address of neither 4 nor 16 bytes is refused", p.inter.IssueServer, []net.IP{{10, 0, 0}}, "it has 3 bytes, not 4 or 16"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := tc.issue(Options{DNSNames: []string{"relay-webhook.meshrelay-system.svc"}, IPAddresses: tc.ips, TTL: time.Hour, Now: t0})
			wantErr(t, err, tc.want)
			if err != nil {
				return
			}
			if len(c.Cert.IPAddresses) != len(tc.ips) {
				t.Fatalf("certificate has IP addresses %v, want %v", c.Cert.IPAddresses, tc.ips)
			}
			for i, ip := range tc.ips {
				if !c.Cert.IPAddresses[i].Equal(ip) {
					t.Errorf("IP address %d = %v, want %v", i, c.Cert.IPAddresses[i], ip)
				}
				if err := c.Cert.VerifyHostname(ip.String()); err != nil {
					t.Errorf("certificate does not cover %v: %v", ip, err)
				}
			}
			if _, err := VerifyChain(c.Cert, []*x509.Certificate{p.inter.Cert}, []*x509.Certificate{p.root.Cert}, RoleServer, t0); err != nil {
				t.Errorf("server certificate does not verify: %v", err)
			}
		})
	}
}

func TestLeavesOnlyRootSignsLeavesButNoCA(t *testing.T) {
	for _, tc := range []struct {
		name       string
		leavesOnly bool
		wantInter  string // error verifying a leaf under an intermediate of the root
	}{
		{"a leaves-only root has path length 0 and its intermediates' leaves do not verify", true, "does not verify"},
		{"a plain root has no path length limit", false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root, err := NewRootCA(Options{CommonName: "webhook CA", TTL: time.Hour, Now: t0, LeavesOnly: tc.leavesOnly})
			if err != nil {
				t.Fatal(err)
			}
			if zero := root.Cert.MaxPathLen == 0 && root.Cert.MaxPathLenZero; zero != tc.leavesOnly {
				t.Errorf("MaxPathLen=%d MaxPathLenZero=%v, want path length 0: %v", root.Cert.MaxPathLen, root.Cert.MaxPathLenZero, tc.leavesOnly)
			}
			srv, err := root.IssueServer(Options{DNSNames: []string{"svc"}, TTL: time.Hour, Now: t0})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := VerifyChain(srv.Cert, nil, []*x509.Certificate{root.Cert}, RoleServer, t0); err != nil {
				t.Errorf("a leaf the root signs does not verify: %v", err)
			}
			inter, err := root.NewIntermediateCA(Options{CommonName: "i", TTL: time.Hour, Now: t0})
			if err != nil {
				t.Fatal(err)
			}
			leaf, err := inter.IssueServer(Options{DNSNames: []string{"svc"}, TTL: time.Hour, Now: t0})
			if err != nil {
				t.Fatal(err)
			}
			_, err = VerifyChain(leaf.Cert, []*x509.Certificate{inter.Cert}, []*x509.Certificate{root.Cert}, RoleServer, t0)
			wantErr(t, err, tc.wantInter)
		})
	}
}
