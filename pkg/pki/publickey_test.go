package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"math/big"
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
	bad := func(edit func(k *rsa.PrivateKey)) []byte {
		k := *rk
		k.Primes = []*big.Int{new(big.Int).Set(rk.Primes[0]), new(big.Int).Set(rk.Primes[1])}
		k.D = new(big.Int).Set(rk.D)
		edit(&k)
		der, _ := asn1.Marshal(struct {
			Version               int
			N                     *big.Int
			E                     int
			D, P, Q, Dp, Dq, Qinv *big.Int
		}{0, k.N, k.E, k.D, k.Primes[0], k.Primes[1], big.NewInt(1), big.NewInt(1), big.NewInt(1)})
		return pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: der})
	}
	for name, data := range map[string][]byte{
		"a private exponent of another key is refused": bad(func(k *rsa.PrivateKey) { k.D.Add(k.D, big.NewInt(2)) }),
		"a prime of another key is refused":            bad(func(k *rsa.PrivateKey) { k.Primes[0].Add(k.Primes[0], big.NewInt(2)) }),
		"an exponent of 1 is refused":                  bad(func(k *rsa.PrivateKey) { k.E = 1 }),
		"DER that is not a key is refused":             pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: []byte{0x30, 0x00}}),
		"a certificate is refused":                     EncodeCertificates(newTestPKI(t, ECDSAP256).root.Cert),
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := PublicKeyOfPrivateKey(data); err == nil {
				t.Error("no error")
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

func FuzzPublicKeyOfPrivateKey(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	f.Add(mustPEM(f, mustKey(f, RSA2048)))
	f.Fuzz(func(t *testing.T, data []byte) {
		pub, err := PublicKeyOfPrivateKey(data)
		full, ferr := DecodePrivateKey(data)
		if ferr != nil {
			return
		}
		if err != nil {
			t.Fatalf("DecodePrivateKey accepts what PublicKeyOfPrivateKey refuses: %v", err)
		}
		if !pub.(interface{ Equal(crypto.PublicKey) bool }).Equal(full.Public()) {
			t.Fatal("public halves differ")
		}
	})
}
