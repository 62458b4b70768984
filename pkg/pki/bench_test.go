package pki

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"testing"
	"time"
)

// The benchmarks run pkg/pki beside the bare stdlib calls it builds on, on
// the same inputs, so that `make bench` reports the cost of our checks as a
// ratio: BenchmarkIssueClient/<key>/pki over .../stdlib, and the same for
// BenchmarkValidateClientSecret. The goal is at most 1.2×. Each also has a
// .../paired sub-benchmark that alternates the two and reports the ratio
// directly (pki/stdlib).

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
		runPair(b, k.name, pki, stdlib)
	}
}

// runPair runs pki and stdlib as sub-benchmarks of their own, then
// alternately in one "paired" sub-benchmark that reports the ratio of
// their total times as pki/stdlib: on a busy machine, where the load
// drifts between the separate runs, that is the steadier figure.
func runPair(b *testing.B, name string, pki, stdlib func() error) {
	for _, sub := range []struct {
		name string
		f    func() error
	}{{"pki", pki}, {"stdlib", stdlib}} {
		b.Run(name+"/"+sub.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := sub.f(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run(name+"/paired", func(b *testing.B) {
		var spent [2]time.Duration
		fs := [2]func() error{pki, stdlib}
		for i := 0; b.Loop(); i++ {
			for j := range 2 {
				f := (i + j) % 2 // alternate which goes first
				start := time.Now()
				if err := fs[f](); err != nil {
					b.Fatal(err)
				}
				spent[f] += time.Since(start)
			}
		}
		b.ReportMetric(float64(spent[0])/float64(spent[1]), "pki/stdlib")
	})
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

func BenchmarkValidateClientSecret(b *testing.B) {
	for _, k := range benchKeys {
		p := newTestPKI(b, k.spec)
		cli, err := p.inter.IssueClient(Options{DNSNames: []string{"cluster-1"}, TTL: time.Hour, Key: k.spec, Now: t0})
		if err != nil {
			b.Fatal(err)
		}
		crt, key, ca := cli.CertPEM(), must(cli.KeyPEM()), cli.CAPEM()
		pki := func() error { _, err := ValidateClientSecret(crt, key, ca, "cluster-1", t0); return err }
		stdlib := func() error { return stdlibValidate(crt, ca) }
		runPair(b, k.name, pki, stdlib)
	}
}

// stdlibValidate is the baseline: parse the leaf, the intermediate and the
// root, and verify the chain for client auth.
func stdlibValidate(crt, ca []byte) error {
	leafBlock, rest := pem.Decode(crt)
	interBlock, _ := pem.Decode(rest)
	caBlock, _ := pem.Decode(ca)
	leaf, err := x509.ParseCertificate(leafBlock.Bytes)
	if err != nil {
		return err
	}
	inter, err := x509.ParseCertificate(interBlock.Bytes)
	if err != nil {
		return err
	}
	root, err := x509.ParseCertificate(caBlock.Bytes)
	if err != nil {
		return err
	}
	opts := x509.VerifyOptions{Roots: x509.NewCertPool(), Intermediates: x509.NewCertPool(), CurrentTime: t0,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	opts.Roots.AddCert(root)
	opts.Intermediates.AddCert(inter)
	_, err = leaf.Verify(opts)
	return err
}
