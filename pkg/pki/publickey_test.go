package pki

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"testing"
	"time"
)

func TestPublicKeyOfPrivateKeyAgreesWithTheFullDecode(t *testing.T) {
	rk := mustKey(t, RSA2048).(*rsa.PrivateKey)
	for _, tc := range []struct {
		name string
		pem  []byte
	}{
		{"PKCS#8 RSA", mustPEM(t, rk)},
		{"PKCS#1 RSA", pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rk)})},
		{"PKCS#8 ECDSA", mustPEM(t, mustKey(t, ECDSAP256))},
		{"PKCS#8 ECDSA P-384", mustPEM(t, mustKey(t, ECDSAP384))},
		{"SEC1 ECDSA", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: must(x509.MarshalECPrivateKey(mustKey(t, ECDSAP256).(*ecdsa.PrivateKey)))})},
		{"PKCS#8 Ed25519", mustPEM(t, mustKey(t, Ed25519Key))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			full, err := DecodePrivateKey(tc.pem)
			if err != nil {
				t.Fatal(err)
			}
			pub, err := PublicKeyOfPrivateKey(tc.pem)
			if err != nil {
				t.Fatalf("PublicKeyOfPrivateKey: %v", err)
			}
			if !pub.(interface{ Equal(crypto.PublicKey) bool }).Equal(full.Public()) {
				t.Error("public halves differ")
			}
		})
	}
}

func TestDecodeKeyPairLoadsAKeyToSignWith(t *testing.T) {
	p := newTestPKI(t, ECDSAP256)
	cli, _ := p.inter.IssueClient(Options{DNSNames: []string{"cluster-1"}, TTL: time.Hour, Now: t0})
	kp, err := DecodeKeyPair(cli.CertPEM(), must(cli.KeyPEM()), cli.CAPEM())
	if err != nil {
		t.Fatal(err)
	}
	if !kp.Cert.Equal(cli.Cert) || len(kp.Intermediates) != 1 || len(kp.Roots) != 1 || kp.Key == nil {
		t.Errorf("DecodeKeyPair = %+v", kp)
	}
	tc := kp.TLSCertificate()
	if len(tc.Certificate) != 2 || !bytes.Equal(tc.Certificate[1], p.inter.Cert.Raw) || tc.Leaf != kp.Cert || tc.PrivateKey != kp.Key {
		t.Errorf("TLSCertificate does not carry the leaf, the intermediate and the key: %d certificates", len(tc.Certificate))
	}
	ca, err := DecodeKeyPair(p.inter.CertPEM(), must(p.inter.KeyPEM()), p.inter.CAPEM())
	if err != nil {
		t.Fatal(err)
	}
	withRoot, err := DecodeKeyPair(append(p.inter.CertPEM(), p.inter.CAPEM()...), must(p.inter.KeyPEM()), p.inter.CAPEM())
	if err != nil {
		t.Fatal(err)
	}
	if n := len(withRoot.Certified().Issuers); n != 1 {
		t.Errorf("a tls.crt that ends with the root gives %d issuers, want the root once", n)
	}
	leaf, err := ca.Certified().IssueClient(Options{DNSNames: []string{"cluster-2"}, TTL: time.Hour, Now: t0})
	if err != nil {
		t.Fatalf("a decoded CA cannot issue: %v", err)
	}
	if _, err := ValidateClientSecret(leaf.CertPEM(), must(leaf.KeyPEM()), leaf.CAPEM(), "cluster-2", t0); err != nil {
		t.Errorf("certificate issued by a decoded CA does not chain to its root: %v", err)
	}
	if kp, err := DecodeKeyPair(cli.CertPEM(), must(cli.KeyPEM()), nil); err != nil || kp.Roots != nil {
		t.Errorf("DecodeKeyPair without ca.crt = %v, %v", kp, err)
	}
	for name, tc := range map[string]struct{ crt, key, ca []byte }{
		"data[tls.crt]": {[]byte("x"), must(cli.KeyPEM()), nil},
		"data[tls.key]": {cli.CertPEM(), must(p.root.KeyPEM()), nil},
		"data[ca.crt]":  {cli.CertPEM(), must(cli.KeyPEM()), []byte("x")},
	} {
		_, err := DecodeKeyPair(tc.crt, tc.key, tc.ca)
		wantErr(t, err, name)
	}
}

// FuzzPublicKeyOfPrivateKey holds PublicKeyOfPrivateKey to the full parse:
// it accepts exactly what DecodePrivateKey accepts, with the same public
// key, and fails with the same error.
func FuzzPublicKeyOfPrivateKey(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	rk := mustKey(f, RSA2048).(*rsa.PrivateKey)
	f.Add(mustPEM(f, rk))
	f.Add(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rk)}))
	f.Fuzz(func(t *testing.T, data []byte) {
		pub, err := PublicKeyOfPrivateKey(data)
		full, ferr := DecodePrivateKey(data)
		switch {
		case ferr != nil && err == nil:
			t.Fatalf("PublicKeyOfPrivateKey accepts what DecodePrivateKey refuses: %v", ferr)
		case ferr != nil && err.Error() != ferr.Error():
			t.Fatalf("errors differ: %v, full parse: %v", err, ferr)
		case ferr == nil && err != nil:
			t.Fatalf("DecodePrivateKey accepts what PublicKeyOfPrivateKey refuses: %v", err)
		case ferr == nil && !pub.(interface{ Equal(crypto.PublicKey) bool }).Equal(full.Public()):
			t.Fatal("public halves differ")
		}
	})
}
