package pki

import (
	"crypto"
	"slices"
	"sync"
	"testing"
	"time"
)

// fuzzSeeds are PEM inputs every decoder's corpus starts from.
func fuzzSeeds(t testing.TB) [][]byte {
	p := newTestPKI(t, ECDSAP256)
	cli, _ := p.inter.IssueClient(Options{DNSNames: []string{"cluster-1"}, TTL: time.Hour, Now: t0})
	return [][]byte{
		cli.CertPEM(),
		must(cli.KeyPEM()),
		must(NewCSR(cli.Key, "cluster-1")),
		mustPEM(t, mustKey(t, Ed25519Key)),
		[]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
		[]byte("not pem"),
		nil,
	}
}

func FuzzDecodeCertificates(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		certs, err := DecodeCertificates(data)
		if err != nil {
			return
		}
		if len(certs) == 0 || len(certs) > MaxChainLength {
			t.Fatalf("decoded %d certificates without error", len(certs))
		}
		again, err := DecodeCertificates(EncodeCertificates(certs...))
		if err != nil || len(again) != len(certs) {
			t.Fatalf("re-encoded chain does not decode the same: %d certificates, %v", len(again), err)
		}
	})
}

func FuzzDecodePrivateKey(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		key, err := DecodePrivateKey(data)
		if err != nil {
			return
		}
		enc, err := EncodePrivateKey(key)
		if err != nil {
			t.Fatalf("decoded key does not encode: %v", err)
		}
		again, err := DecodePrivateKey(enc)
		if err != nil {
			t.Fatalf("re-encoded key does not decode: %v", err)
		}
		if pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(again.Public()) {
			t.Fatal("re-encoded key has another public key")
		}
	})
}

func FuzzDecodeCSR(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		csr, err := DecodeCSR(data)
		if err == nil && csr == nil {
			t.Fatal("no CSR and no error")
		}
	})
}

var fuzzIssuer = sync.OnceValues(func() (*Issuer, error) {
	root, err := NewRootCA(Options{CommonName: "fuzz-root", TTL: 48 * time.Hour, Now: t0.Add(-time.Hour)})
	if err != nil {
		return nil, err
	}
	inter, err := root.NewIntermediateCA(Options{CommonName: "fuzz-signing", TTL: 24 * time.Hour, Now: t0.Add(-time.Hour)})
	if err != nil {
		return nil, err
	}
	return NewIssuer(inter, Policy{Role: RoleClient, TTL: time.Hour}, t0)
})

// FuzzSign feeds arbitrary CSRs, identities and times to Issuer.SignPEM.
// Property: whatever is issued carries exactly the identity's names, is not
// a CA, lives no longer than the policy TTL plus the backdate, and ends no
// later than the issuer.
func FuzzSign(f *testing.F) {
	key := mustKey(f, ECDSAP256)
	f.Add(must(NewCSR(key, "cluster-1")), "cluster-1", int64(0))
	f.Add(must(NewCSR(key, "cluster-1")), "cluster-2", int64(60))
	f.Add(must(NewCSR(key, "a", "b")), "a", int64(3600))
	f.Add(must(NewCSR(key, "cluster-1")), "cluster-1", int64(23*3600+30*60))
	f.Add([]byte("junk"), "x", int64(-5))
	f.Fuzz(func(t *testing.T, csrPEM []byte, name string, offset int64) {
		iss, err := fuzzIssuer()
		if err != nil {
			t.Fatal(err)
		}
		now := t0.Add(time.Duration(offset%(48*3600)) * time.Second)
		id := Identity{DNSNames: []string{name}}
		got, err := iss.SignPEM(csrPEM, id, now)
		if err != nil {
			return
		}
		c := got.Cert
		if !slices.Equal(c.DNSNames, id.DNSNames) {
			t.Fatalf("issued DNS names %v, identity %v", c.DNSNames, id.DNSNames)
		}
		if c.IsCA {
			t.Fatal("issued a CA")
		}
		if life := c.NotAfter.Sub(c.NotBefore); life > time.Hour+DefaultBackdate {
			t.Fatalf("issued lifetime %s exceeds the cap", life)
		}
		if c.NotAfter.After(iss.CA().Cert.NotAfter) || c.NotAfter.After(now.Add(time.Hour)) {
			t.Fatalf("NotAfter %s outlives the issuer or the TTL", c.NotAfter)
		}
	})
}
