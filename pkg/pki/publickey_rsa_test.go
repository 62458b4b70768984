package pki

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"math/big"
	"testing"
	"time"
)

// rsaFields returns the PKCS#1 fields of k, each a copy.
func rsaFields(k *rsa.PrivateKey) pkcs1Key {
	c := func(x *big.Int) *big.Int { return new(big.Int).Set(x) }
	return pkcs1Key{N: c(k.N), E: k.E, D: c(k.D), P: c(k.Primes[0]), Q: c(k.Primes[1]),
		Dp: c(k.Precomputed.Dp), Dq: c(k.Precomputed.Dq), Qinv: c(k.Precomputed.Qinv)}
}

// smallRSA returns the fields of a two-prime RSA key with a modulus of
// bits, which rsa.GenerateKey refuses to make below 1024 bits.
func smallRSA(t testing.TB, bits int) pkcs1Key {
	t.Helper()
	one, e := big.NewInt(1), big.NewInt(65537)
	for {
		p, err := rand.Prime(rand.Reader, bits/2)
		if err != nil {
			t.Fatal(err)
		}
		q, _ := rand.Prime(rand.Reader, bits/2)
		pm1, qm1 := new(big.Int).Sub(p, one), new(big.Int).Sub(q, one)
		d := new(big.Int).ModInverse(e, new(big.Int).Mul(pm1, qm1))
		n := new(big.Int).Mul(p, q)
		if d == nil || p.Cmp(q) == 0 || n.BitLen() != bits {
			continue
		}
		return pkcs1Key{N: n, E: 65537, D: d, P: p, Q: q,
			Dp: new(big.Int).Mod(d, pm1), Dq: new(big.Int).Mod(d, qm1), Qinv: new(big.Int).ModInverse(q, p)}
	}
}

func pkcs1PEM(t testing.TB, k pkcs1Key) []byte {
	t.Helper()
	der, err := asn1.Marshal(k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: der})
}

func TestPublicKeyOfAnRSAKeySaysYesOnlyWhereTheFullParseDoes(t *testing.T) {
	rk := mustKey(t, RSA2048).(*rsa.PrivateKey)
	edit := func(f func(k *pkcs1Key)) pkcs1Key {
		k := rsaFields(rk)
		f(&k)
		return k
	}
	one := big.NewInt(1)
	for _, tc := range []struct {
		name string
		key  pkcs1Key
		// fast is whether the key is read without a full load; loads is
		// whether the full parse accepts it.
		fast, loads bool
	}{
		{"a key as crypto/rsa writes it is read without a full load", rsaFields(rk), true, true},
		{"CRT exponents that do not belong to the key are refused", edit(func(k *pkcs1Key) { k.Dp, k.Dq, k.Qinv = one, one, one }), false, false},
		{"a private exponent of another key is refused", edit(func(k *pkcs1Key) { k.D.Add(k.D, big.NewInt(2)) }), false, false},
		{"a prime of another key is refused", edit(func(k *pkcs1Key) { k.P.Add(k.P, big.NewInt(2)) }), false, false},
		{"an even modulus is refused", edit(func(k *pkcs1Key) { k.N.Add(k.N, one) }), false, false},
		{"a public exponent of 1 is refused", edit(func(k *pkcs1Key) { k.E = 1 }), false, false},
		{"an even public exponent is refused", edit(func(k *pkcs1Key) { k.E = 65536 }), false, false},
		{"a public exponent over 31 bits is refused", edit(func(k *pkcs1Key) { k.E = 1<<32 + 1 }), false, false},
		{"a CRT exponent not below p-1 is refused", edit(func(k *pkcs1Key) { k.Dp.Add(k.Dp, new(big.Int).Sub(k.P, one)) }), false, false},
		{"a CRT coefficient not below p is refused", edit(func(k *pkcs1Key) { k.Qinv.Add(k.Qinv, k.P) }), false, false},
		{"a CRT coefficient of another key is refused", edit(func(k *pkcs1Key) { k.Qinv.Add(k.Qinv, one) }), false, false},
		{"a negative value is refused", edit(func(k *pkcs1Key) { k.Dq.Neg(k.Dq) }), false, false},
		{"a key without CRT values is left to the full parse, which computes them", edit(func(k *pkcs1Key) { k.Dp, k.Dq, k.Qinv = nil, nil, nil }), false, true},
		{"a version 1 key is left to the full parse", edit(func(k *pkcs1Key) { k.Version = 1 }), false, true},
		{"a version 2 key is refused", edit(func(k *pkcs1Key) { k.Version = 2 }), false, false},
		{"a 512-bit key is left to the full parse, which loads it", smallRSA(t, 512), false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.key.loads(); got != tc.fast {
				t.Errorf("loads() = %v, want %v", got, tc.fast)
			}
			data := pkcs1PEM(t, tc.key)
			full, ferr := DecodePrivateKey(data)
			if (ferr == nil) != tc.loads {
				t.Fatalf("DecodePrivateKey error = %v, want loads=%v", ferr, tc.loads)
			}
			pub, err := PublicKeyOfPrivateKey(data)
			switch {
			case ferr != nil && (err == nil || err.Error() != ferr.Error()):
				t.Errorf("PublicKeyOfPrivateKey error = %v, want the full parse's %v", err, ferr)
			case ferr == nil && err != nil:
				t.Errorf("PublicKeyOfPrivateKey refused a key that loads: %v", err)
			case ferr == nil && !pub.(*rsa.PublicKey).Equal(full.Public()):
				t.Error("public halves differ")
			}
		})
	}
}

func TestPublicKeyOfAnRSAKeyReadsEveryWrapping(t *testing.T) {
	rk := mustKey(t, RSA2048).(*rsa.PrivateKey)
	p1der, _ := asn1.Marshal(rsaFields(rk))
	p8 := func(inner []byte, trailing ...byte) []byte {
		der, _ := asn1.Marshal(struct {
			Version    int
			Algo       pkix.AlgorithmIdentifier
			PrivateKey []byte
		}{0, pkix.AlgorithmIdentifier{Algorithm: asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 1}, Parameters: asn1.NullRawValue}, inner})
		return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: append(der, trailing...)})
	}
	broken, _ := asn1.Marshal(func() pkcs1Key { k := rsaFields(rk); k.Qinv = big.NewInt(1); return k }())
	for _, tc := range []struct {
		name string
		data []byte
		want string
	}{
		{"PKCS#8 around a good key is read", p8(p1der), ""},
		{"PKCS#8 with bytes after it is read as the full parse reads it", p8(p1der, 0x05, 0x00), ""},
		{"PKCS#8 around a broken key fails as the full parse does", p8(broken), "invalid CRT coefficient"},
		{"PKCS#1 with bytes after it fails as the full parse does", pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: append(p1der, 0x05, 0x00)}), "trailing data"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pub, err := PublicKeyOfPrivateKey(tc.data)
			wantErr(t, err, tc.want)
			full, ferr := DecodePrivateKey(tc.data)
			if (err == nil) != (ferr == nil) {
				t.Fatalf("PublicKeyOfPrivateKey error %v, DecodePrivateKey error %v", err, ferr)
			}
			if err == nil && !pub.(interface{ Equal(crypto.PublicKey) bool }).Equal(full.Public()) {
				t.Error("public halves differ")
			}
		})
	}
}

// der returns a DER element of tag with contents c, its length in the
// minimal form.
func der(tag byte, c ...[]byte) []byte {
	body := bytes.Join(c, nil)
	switch n := len(body); {
	case n < 0x80:
		return append([]byte{tag, byte(n)}, body...)
	case n < 0x100:
		return append([]byte{tag, 0x81, byte(n)}, body...)
	default:
		return append([]byte{tag, 0x82, byte(n >> 8), byte(n)}, body...)
	}
}

func derInt(x *big.Int) []byte {
	b := x.Bytes()
	if len(b) == 0 || b[0]&0x80 != 0 {
		b = append([]byte{0}, b...)
	}
	return der(tagInteger, b)
}

// asn1PKCS1 is crypto/x509's shape of a PKCS#1 key, additional primes and all.
type asn1PKCS1 struct {
	Version          int
	N                *big.Int
	E                int
	D, P, Q          *big.Int
	Dp, Dq, Qinv     *big.Int        `asn1:"optional"`
	AdditionalPrimes []asn1.RawValue `asn1:"optional,omitempty"`
}

// agreesWithASN1 fails t unless encoding/asn1 reads der to the key k that
// parsePKCS1 read.
func agreesWithASN1(t testing.TB, der []byte, k pkcs1Key) {
	t.Helper()
	var a asn1PKCS1
	rest, err := asn1.Unmarshal(der, &a)
	switch {
	case err != nil || len(rest) > 0:
		t.Fatalf("parsePKCS1 read what encoding/asn1 refuses: %v, %d bytes left", err, len(rest))
	case len(a.AdditionalPrimes) > 0 || a.Dp == nil || a.Dq == nil || a.Qinv == nil:
		t.Fatal("parsePKCS1 read a key encoding/asn1 reads with other parts")
	case a.Version != k.Version || a.E != k.E:
		t.Fatalf("version, e = %d, %d; encoding/asn1 reads %d, %d", k.Version, k.E, a.Version, a.E)
	}
	for i, pair := range [][2]*big.Int{{a.N, k.N}, {a.D, k.D}, {a.P, k.P}, {a.Q, k.Q}, {a.Dp, k.Dp}, {a.Dq, k.Dq}, {a.Qinv, k.Qinv}} {
		if pair[0].Cmp(pair[1]) != 0 {
			t.Fatalf("integer %d differs from encoding/asn1's", i)
		}
	}
}

func TestParsePKCS1ReadsOnlyTheUsualForm(t *testing.T) {
	rk := mustKey(t, RSA2048).(*rsa.PrivateKey)
	f := rsaFields(rk)
	ints := func(e []byte, extra ...[]byte) []byte {
		return der(tagSequence, append([][]byte{derInt(big.NewInt(0)), derInt(f.N), e, derInt(f.D), derInt(f.P), derInt(f.Q), derInt(f.Dp), derInt(f.Dq), derInt(f.Qinv)}, extra...)...)
	}
	e := derInt(big.NewInt(int64(f.E)))
	for _, tc := range []struct {
		name string
		der  []byte
		ok   bool
	}{
		{"what crypto/x509 writes is read", x509.MarshalPKCS1PrivateKey(rk), true},
		{"the same built here is read", ints(e), true},
		{"an additional prime is left to encoding/asn1", ints(e, der(tagSequence, der(tagSequence, derInt(f.P), derInt(f.D), derInt(f.Dp)))), false},
		{"bytes after the key are refused", append(ints(e), 0), false},
		{"a length in a longer form than needed is refused", ints([]byte{tagInteger, 0x81, 0x03, 0x01, 0x00, 0x01}), false},
		{"a short length in the two-byte form is refused", ints([]byte{tagInteger, 0x82, 0x00, 0x03, 0x01, 0x00, 0x01}), false},
		{"a three-byte length is refused", ints([]byte{tagInteger, 0x83, 0x00, 0x00, 0x03, 0x01, 0x00, 0x01}), false},
		{"an integer with a needless leading zero is refused", ints([]byte{tagInteger, 0x04, 0x00, 0x01, 0x00, 0x01}), false},
		{"a negative integer is refused", ints(der(tagInteger, []byte{0xff})), false},
		{"a zero integer is refused", ints(der(tagInteger, []byte{0})), false},
		{"an empty integer is refused", ints(der(tagInteger)), false},
		{"a public exponent over 31 bits is refused", ints(derInt(big.NewInt(1<<31 + 1))), false},
		{"another tag is refused", ints(der(tagOctetString, []byte{1, 0, 1})), false},
		{"a length past the end is refused", ints(e)[:100], false},
		{"a version 1 key is left to encoding/asn1", func() []byte {
			d := ints(e)
			i := bytes.Index(d, []byte{tagInteger, 1, 0})
			d[i+2] = 1
			return d
		}(), false},
		{"an empty input is refused", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k, ok := parsePKCS1(tc.der)
			if ok != tc.ok {
				t.Fatalf("parsePKCS1 ok = %v, want %v", ok, tc.ok)
			}
			if ok {
				agreesWithASN1(t, tc.der, k)
				if !k.loads() {
					t.Error("a good key does not pass loads()")
				}
			}
		})
	}
}

func TestRSAPKCS8ReadsOnlyTheUsualForm(t *testing.T) {
	rk := mustKey(t, RSA2048).(*rsa.PrivateKey)
	inner := x509.MarshalPKCS1PrivateKey(rk)
	v0 := derInt(big.NewInt(0))
	withNull := der(tagSequence, rsaAlgorithm)
	noParams := der(tagSequence, rsaAlgorithm[:len(rsaAlgorithm)-2])
	octets := der(tagOctetString, inner)
	for _, tc := range []struct {
		name string
		der  []byte
		ok   bool
	}{
		{"what crypto/x509 writes is read", must(x509.MarshalPKCS8PrivateKey(rk)), true},
		{"absent parameters are read", der(tagSequence, v0, noParams, octets), true},
		{"attributes are left to encoding/asn1", der(tagSequence, v0, withNull, octets, der(0xa0)), false},
		{"version 1 is left to encoding/asn1", der(tagSequence, derInt(big.NewInt(1)), withNull, octets), false},
		{"another algorithm is left to encoding/asn1", must(x509.MarshalPKCS8PrivateKey(mustKey(t, ECDSAP256))), false},
		{"bytes after it are left to encoding/asn1", append(der(tagSequence, v0, withNull, octets), 0), false},
		{"a key that is not an OCTET STRING is refused", der(tagSequence, v0, withNull, der(tagSequence, inner)), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := rsaPKCS8(tc.der)
			if ok != tc.ok || ok && !bytes.Equal(got, inner) {
				t.Errorf("rsaPKCS8 ok = %v, want %v (inner key equal: %v)", ok, tc.ok, bytes.Equal(got, inner))
			}
		})
	}
}

// FuzzParsePKCS1 holds the fast DER reader to encoding/asn1: whatever it
// reads, encoding/asn1 reads to the same values in crypto/x509's shape.
func FuzzParsePKCS1(f *testing.F) {
	rk := mustKey(f, RSA2048).(*rsa.PrivateKey)
	f.Add(x509.MarshalPKCS1PrivateKey(rk))
	f.Add(must(asn1.Marshal(smallRSA(f, 512))))
	f.Add([]byte{tagSequence, 0x03, tagInteger, 0x01, 0x00})
	f.Fuzz(func(t *testing.T, der []byte) {
		if k, ok := parsePKCS1(der); ok {
			agreesWithASN1(t, der, k)
		}
	})
}

func TestAClientSecretWhoseRSAKeyCannotLoadIsRefused(t *testing.T) {
	p := newTestPKI(t, RSA2048)
	cli, err := p.inter.IssueClient(Options{DNSNames: []string{"cluster-1"}, TTL: time.Hour, Key: RSA2048, Now: t0})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ValidateClientSecret(cli.CertPEM(), must(cli.KeyPEM()), cli.CAPEM(), "cluster-1", t0); err != nil {
		t.Fatalf("the untouched secret does not validate: %v", err)
	}
	// The public half still matches tls.crt, but crypto/x509 refuses to load
	// the key, so the agent could not use the secret.
	k := rsaFields(cli.Key.(*rsa.PrivateKey))
	k.Qinv.Add(k.Qinv, big.NewInt(1))
	_, err = ValidateClientSecret(cli.CertPEM(), pkcs1PEM(t, k), cli.CAPEM(), "cluster-1", t0)
	wantErr(t, err, `data[tls.key]: block 1 ("RSA PRIVATE KEY"): failed to parse private key: crypto/rsa: invalid CRT coefficient`)
	var se *SecretError
	var de *DecodeError
	if !errors.As(err, &se) || se.Key != KeyTLSKey || !errors.As(err, &de) || de.Block != 1 {
		t.Errorf("error %v does not unwrap to the secret key and the PEM block at fault", err)
	}
}
