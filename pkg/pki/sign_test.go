package pki

import (
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"net"
	"slices"
	"testing"
	"time"
)

func newTestIssuer(t testing.TB, p testPKI, policy Policy) *Issuer {
	t.Helper()
	iss, err := NewIssuer(p.inter, policy, t0)
	if err != nil {
		t.Fatalf("NewIssuer: %v", err)
	}
	return iss
}

func TestSignIssuesWhatTheIdentityMayHold(t *testing.T) {
	p := newTestPKI(t, ECDSAP256)
	iss := newTestIssuer(t, p, Policy{Role: RoleClient, TTL: 24 * time.Hour})
	key := mustKey(t, ECDSAP256)
	got, err := iss.Sign(mustCSR(t, key, "cluster-1"), Identity{DNSNames: []string{"cluster-1"}}, t0)
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	c := got.Cert
	if c.IsCA || !slices.Equal(c.DNSNames, []string{"cluster-1"}) || !slices.Equal(c.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) {
		t.Errorf("issued IsCA=%v DNS=%v EKU=%v", c.IsCA, c.DNSNames, c.ExtKeyUsage)
	}
	if !c.NotAfter.Equal(t0.Add(24*time.Hour)) || !c.NotBefore.Equal(t0.Add(-DefaultBackdate)) {
		t.Errorf("validity %s..%s, want %s..%s", c.NotBefore, c.NotAfter, t0.Add(-DefaultBackdate), t0.Add(24*time.Hour))
	}
	if len(got.Chain) != 3 || !got.Chain[2].Equal(p.root.Cert) {
		t.Errorf("chain has %d certificates, want leaf, intermediate, root", len(got.Chain))
	}
	if err := checkLeafPEM(got.CertPEM, mustPEM(t, key), got.CAPEM, RoleClient, "cluster-1"); err != nil {
		t.Errorf("issued PEM does not validate as a client secret: %v", err)
	}
	again, err := iss.SignPEM(must(NewCSR(key, "cluster-1")), Identity{DNSNames: []string{"cluster-1"}}, t0)
	if err != nil || again.Cert.SerialNumber.Cmp(c.SerialNumber) == 0 {
		t.Errorf("second signature: err=%v, serial reused=%v", err, err == nil && again.Cert.SerialNumber.Cmp(c.SerialNumber) == 0)
	}
}

func TestSignCapsTheTTLAtTheIssuer(t *testing.T) {
	p := newTestPKI(t, ECDSAP256)
	iss := newTestIssuer(t, p, Policy{Role: RoleClient, TTL: 100 * 365 * 24 * time.Hour, Backdate: -1})
	got, err := iss.Sign(mustCSR(t, mustKey(t, ECDSAP256), "c"), Identity{DNSNames: []string{"c"}}, t0)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Cert.NotAfter.Equal(p.inter.Cert.NotAfter) || !got.Cert.NotBefore.Equal(t0) {
		t.Errorf("validity %s..%s, want %s..%s", got.Cert.NotBefore, got.Cert.NotAfter, t0, p.inter.Cert.NotAfter)
	}
	_, err = iss.Sign(mustCSR(t, mustKey(t, ECDSAP256), "c"), Identity{DNSNames: []string{"c"}}, p.inter.Cert.NotAfter.Add(time.Minute))
	wantErr(t, err, "expired at")

	short := newTestIssuer(t, p, Policy{Role: RoleClient, TTL: time.Minute})
	got, err = short.Sign(mustCSR(t, mustKey(t, ECDSAP256), "c"), Identity{DNSNames: []string{"c"}}, t0)
	if err != nil {
		t.Fatal(err)
	}
	if want := t0.Add(-6 * time.Second); !got.Cert.NotBefore.Equal(want) {
		t.Errorf("a one-minute certificate starts at %s, want backdated by a tenth of its TTL to %s", got.Cert.NotBefore, want)
	}
}

func TestSignRefusesRequestsOutsideThePolicy(t *testing.T) {
	p := newTestPKI(t, ECDSAP256)
	iss := newTestIssuer(t, p, Policy{Role: RoleClient, TTL: time.Hour, AllowedKeys: []KeySpec{ECDSAP256, RSA2048}})
	key := mustKey(t, ECDSAP256)
	id := Identity{DNSNames: []string{"cluster-1"}}
	tampered := mustCSR(t, key, "cluster-1")
	tampered.Signature = slices.Clone(tampered.Signature)
	tampered.Signature[len(tampered.Signature)-3] ^= 0xff
	for _, tc := range []struct {
		name string
		csr  *x509.CertificateRequest
		id   Identity
		want string
	}{
		{"a CSR for another cluster is refused", mustCSR(t, key, "cluster-2"), id, `asks for DNS names [cluster-2], but the caller may hold only [cluster-1]`},
		{"a CSR with an extra name is refused", mustCSR(t, key, "cluster-1", "cluster-2"), id, "may hold only [cluster-1]"},
		{"a CSR with a bad signature is refused", tampered, id, "signature does not verify"},
		{"a key not in the list is refused", mustCSR(t, mustKey(t, ECDSAP384), "cluster-1"), id, "key ECDSA P-384 is not allowed: use one of ECDSA P-256, RSA 2048"},
		{"a CSR asking for an IP is refused", rawCSR(t, &x509.CertificateRequest{DNSNames: []string{"cluster-1"}, IPAddresses: []net.IP{net.IPv4(10, 0, 0, 1)}}), id, "1 IP, URI or email SANs"},
		{"a CSR asking to be a CA is refused", rawCSR(t, &x509.CertificateRequest{DNSNames: []string{"cluster-1"}, ExtraExtensions: []pkix.Extension{{Id: oidBasicConstraints, Value: must(asn1.Marshal(struct{ IsCA bool }{true}))}}}), id, "asks to be a CA"},
		{"an identity without names is refused", mustCSR(t, key, "cluster-1"), Identity{}, "no DNS names"},
		{"an identity with an underscore is refused", mustCSR(t, key, "cluster-1"), Identity{DNSNames: []string{"cluster_1"}}, `use "cluster-1"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := iss.Sign(tc.csr, tc.id, t0)
			wantErr(t, err, tc.want)
			if got != nil {
				t.Error("a refused request returned a certificate")
			}
		})
	}
	_, err := iss.SignPEM([]byte("junk"), id, t0)
	wantErr(t, err, "certificate request: no PEM data found")
	notCA := rawCSR(t, &x509.CertificateRequest{DNSNames: []string{"cluster-1"}, ExtraExtensions: []pkix.Extension{{Id: oidBasicConstraints, Value: must(asn1.Marshal(struct{ IsCA bool }{false}))}}})
	if _, err := iss.Sign(notCA, id, t0); err != nil {
		t.Errorf("a CSR with basic constraints CA:FALSE was refused: %v", err)
	}
}

func rawCSR(t testing.TB, tmpl *x509.CertificateRequest) *x509.CertificateRequest {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, mustKey(t, ECDSAP256))
	if err != nil {
		t.Fatal(err)
	}
	csr, err := DecodeCSR(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
	if err != nil {
		t.Fatal(err)
	}
	return csr
}

func TestServerPolicyIssuesServerCertificates(t *testing.T) {
	p := newTestPKI(t, RSA2048)
	iss := newTestIssuer(t, p, Policy{Role: RoleServer, TTL: time.Hour})
	key := mustKey(t, RSA2048)
	got, err := iss.Sign(mustCSR(t, key, "gloo-mesh-mgmt-server.gloo-mesh"), Identity{DNSNames: []string{"gloo-mesh-mgmt-server.gloo-mesh"}}, t0)
	if err != nil {
		t.Fatal(err)
	}
	if got.Cert.KeyUsage&x509.KeyUsageKeyEncipherment == 0 {
		t.Error("RSA server certificate lacks key encipherment")
	}
	if err := checkLeafPEM(got.CertPEM, mustPEM(t, key), got.CAPEM, RoleServer, "gloo-mesh-mgmt-server.gloo-mesh"); err != nil {
		t.Errorf("server secret does not validate: %v", err)
	}
}

func TestNewIssuerChecksItsCAOnce(t *testing.T) {
	p := newTestPKI(t, ECDSAP256)
	leaf, _ := p.inter.IssueClient(Options{DNSNames: []string{"a"}, TTL: time.Hour, Now: t0})
	other := newTestPKI(t, ECDSAP256)
	for _, tc := range []struct {
		name string
		ca   *Certified
		p    Policy
		now  time.Time
		want string
	}{
		{"a CA role policy is refused", p.inter, Policy{Role: RoleSigningCA, TTL: time.Hour}, t0, "an issuer signs client or server certificates"},
		{"a zero TTL is refused", p.inter, Policy{Role: RoleClient}, t0, "TTL 0s must be positive"},
		{"a key of another CA is refused", &Certified{Cert: p.inter.Cert, Key: p.root.Key, Issuers: p.inter.Issuers}, Policy{Role: RoleClient, TTL: time.Hour}, t0, "does not match"},
		{"a leaf is not a CA", leaf, Policy{Role: RoleClient, TTL: time.Hour}, t0, "is not a CA"},
		{"an intermediate under another root is refused", &Certified{Cert: p.inter.Cert, Key: p.inter.Key, Issuers: other.inter.Issuers}, Policy{Role: RoleClient, TTL: time.Hour}, t0, "does not verify"},
		{"an expired CA is refused", p.inter, Policy{Role: RoleClient, TTL: time.Hour}, p.inter.Cert.NotAfter.Add(time.Hour), "expired"},
		{"a root may sign directly", p.root, Policy{Role: RoleClient, TTL: time.Hour}, t0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewIssuer(tc.ca, tc.p, tc.now)
			wantErr(t, err, tc.want)
		})
	}
	iss := newTestIssuer(t, p, Policy{Role: RoleClient, TTL: time.Hour})
	if iss.CA() != p.inter {
		t.Error("CA() is not the issuer's CA")
	}
}

func TestCheckIssuedCatchesACertificateThatDoesNotLink(t *testing.T) {
	p := newTestPKI(t, ECDSAP256)
	iss := newTestIssuer(t, p, Policy{Role: RoleClient, TTL: time.Hour})
	key := mustKey(t, ECDSAP256)
	csr := mustCSR(t, key, "c")
	id := Identity{DNSNames: []string{"c"}}
	good, err := iss.Sign(csr, id, t0)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := newTestPKI(t, ECDSAP256).inter.IssueClient(Options{DNSNames: []string{"c"}, TTL: time.Hour, Now: t0})
	ca, _ := p.inter.IssueClient(Options{DNSNames: []string{"d"}, TTL: time.Hour, Now: t0})
	for _, tc := range []struct {
		name string
		cert *x509.Certificate
		want string
	}{
		{"the certificate just signed passes", good.Cert, ""},
		{"a certificate of another issuer fails", other.Cert, "authority key ID differs"},
		{"a certificate for other names fails", ca.Cert, "differ from the identity"},
		{"a certificate with another key fails", func() *x509.Certificate {
			c, _ := p.inter.IssueClient(Options{DNSNames: []string{"c"}, TTL: time.Hour, Now: t0})
			return c.Cert
		}(), "public key differs"},
		{"a certificate naming another issuer fails", p.root.Cert, "issuer name differs"},
	} {
		t.Run(tc.name, func(t *testing.T) { wantErr(t, iss.checkIssued(tc.cert, csr, id), tc.want) })
	}
	ca.Cert.IsCA = true
	ca.Cert.DNSNames = []string{"c"}
	wantErr(t, iss.checkIssued(ca.Cert, csr, id), "is a CA")
	late := *good.Cert
	late.NotAfter = p.inter.Cert.NotAfter.Add(time.Hour)
	wantErr(t, iss.checkIssued(&late, csr, id), "outside the signing CA's")
}
