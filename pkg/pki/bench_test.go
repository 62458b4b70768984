package pki

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"testing"
	"time"

	"github.com/meshrelay/meshrelay/internal/benchpair"
)

// The benchmarks run pkg/pki beside the bare stdlib calls it builds on, on
// the same inputs, so that `make bench` reports the cost of our checks as a
// ratio: BenchmarkIssueClient/<key>/pki over .../stdlib, and the
// .../paired sub-benchmark that alternates the two (pki/stdlib).

var benchKeys = []struct {
	name string
	spec KeySpec
}{{"ecdsa", ECDSAP256}, {"rsa", RSA2048}}

func BenchmarkIssueClient(b *testing.B) {
	for _, k := range benchKeys {
		p := newTestPKI(b, k.spec)
		csrPEM := must(NewCSR(mustKey(b, k.spec), "cluster-1"))
		iss := newTestIssuer(b, p, Policy{Role: RoleClient, TTL: 365 * 24 * time.Hour})
		id := Identity{DNSNames: []string{"cluster-1"}}
		pki := func() error { _, err := iss.SignPEM(csrPEM, id, t0); return err }
		stdlib := func() error { _, err := stdlibIssue(csrPEM, p.inter.Cert, p.inter.Key); return err }
		benchpair.Run(b, k.name, "pki", pki, stdlib)
	}
}

// stdlibIssue is the baseline: decode and parse the CSR, check its
// signature, and sign an equivalent template.
func stdlibIssue(csrPEM []byte, ca *x509.Certificate, key crypto.Signer) ([]byte, error) {
	block, _ := pem.Decode(csrPEM)
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, err
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, err
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               csr.Subject,
		DNSNames:              csr.DNSNames,
		NotBefore:             t0.Add(-DefaultBackdate),
		NotAfter:              t0.Add(365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	return x509.CreateCertificate(rand.Reader, tmpl, ca, csr.PublicKey, key)
}
