package pki

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"net"
	"slices"
	"strings"
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
			mustBeDecodeError(t, err)
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
			mustBeDecodeError(t, err)
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
		if err != nil {
			mustBeDecodeError(t, err)
			return
		}
		again, err := DecodeCSR(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr.Raw}))
		if err != nil || !bytes.Equal(again.Raw, csr.Raw) {
			t.Fatalf("re-encoded CSR does not decode the same: %v", err)
		}
	})
}

// mustBeDecodeError fails t unless err is a *DecodeError, which callers
// such as the webhooks rely on to say which block is wrong.
func mustBeDecodeError(t *testing.T, err error) {
	t.Helper()
	var de *DecodeError
	if !errors.As(err, &de) {
		t.Fatalf("error %q (%T) is not a *DecodeError", err, err)
	}
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

// fuzzKeys are the CSR keys FuzzSignRequest picks from: made once, as an
// RSA key per input would make the target too slow to explore.
var fuzzKeys = sync.OnceValue(func() []crypto.Signer {
	var keys []crypto.Signer
	for _, spec := range []KeySpec{ECDSAP256, ECDSAP384, Ed25519Key} {
		k, err := GenerateKey(spec)
		if err != nil {
			panic(err)
		}
		keys = append(keys, k)
	}
	return keys
})

// FuzzSignRequest builds correctly signed CSRs from fuzzed contents (the
// names asked for, the names the identity may hold, an IP SAN, a request to
// be a CA, the key) and signs them at a fuzzed time, so that the policy
// itself is explored rather than the signature check. Property: what is
// issued carries exactly the identity's names and nothing else, was asked
// for with exactly those names, no IP and no CA; is not a CA; lives within
// the TTL, its backdate and the issuer's validity; and verifies to the root
// for client auth.
func FuzzSignRequest(f *testing.F) {
	f.Add("cluster-1", "cluster-1", uint8(0), false, false, int64(0))
	f.Add("cluster-1,cluster-2", "cluster-1", uint8(0), false, false, int64(0))
	f.Add("b,a", "a,b", uint8(1), false, false, int64(600))
	f.Add("cluster-1", "cluster-1", uint8(2), true, false, int64(3600))
	f.Add("cluster-1", "cluster-1", uint8(0), false, true, int64(60))
	f.Add("cluster-1", "cluster_1", uint8(0), false, false, int64(0))
	f.Add("x", "x", uint8(1), false, false, int64(22*3600+30*60))
	f.Add("x", "x", uint8(2), false, false, int64(30*3600))
	f.Fuzz(func(t *testing.T, asked, allowed string, keyIndex uint8, askIP, askCA bool, offset int64) {
		iss, err := fuzzIssuer()
		if err != nil {
			t.Fatal(err)
		}
		keys := fuzzKeys()
		tmpl := &x509.CertificateRequest{DNSNames: strings.Split(asked, ",")}
		if askIP {
			tmpl.IPAddresses = []net.IP{net.IPv4(10, 0, 0, 1)}
		}
		if askCA {
			tmpl.ExtraExtensions = []pkix.Extension{{Id: oidBasicConstraints, Critical: true, Value: must(asn1.Marshal(struct{ IsCA bool }{true}))}}
		}
		der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, keys[int(keyIndex)%len(keys)])
		if err != nil {
			return // names x509 cannot encode
		}
		csr, err := x509.ParseCertificateRequest(der)
		if err != nil {
			return
		}
		id := Identity{DNSNames: strings.Split(allowed, ",")}
		now := t0.Add(time.Duration(offset%(48*3600)) * time.Second)
		got, err := iss.Sign(csr, id, now)
		if err != nil {
			if got != nil {
				t.Fatal("a refused request returned a certificate")
			}
			return
		}
		c, ca := got.Cert, iss.CA().Cert
		switch {
		case !slices.Equal(c.DNSNames, id.DNSNames):
			t.Fatalf("issued DNS names %v, identity %v", c.DNSNames, id.DNSNames)
		case !sameNames(csr.DNSNames, id.DNSNames):
			t.Fatalf("signed a request for %v as identity %v", csr.DNSNames, id.DNSNames)
		case askIP || askCA:
			t.Fatalf("signed a request asking for an IP (%v) or to be a CA (%v)", askIP, askCA)
		case c.IsCA || len(c.IPAddresses)+len(c.URIs)+len(c.EmailAddresses) > 0:
			t.Fatalf("issued a CA (%v) or other SANs", c.IsCA)
		case c.NotAfter.After(now.Add(time.Hour)) || c.NotAfter.After(ca.NotAfter):
			t.Fatalf("NotAfter %s outlives the TTL from %s or the issuer's %s", c.NotAfter, now, ca.NotAfter)
		case c.NotBefore.Before(now.Add(-time.Hour/10)) || c.NotBefore.Before(ca.NotBefore):
			t.Fatalf("NotBefore %s is backdated more than a tenth of the TTL from %s or before the issuer's %s", c.NotBefore, now, ca.NotBefore)
		}
		roots, inters := x509.NewCertPool(), x509.NewCertPool()
		roots.AddCert(got.Chain[len(got.Chain)-1])
		for _, i := range got.Chain[1 : len(got.Chain)-1] {
			inters.AddCert(i)
		}
		if _, err := c.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inters, CurrentTime: now,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			t.Fatalf("issued certificate does not verify to the root: %v", err)
		}
	})
}
