package pki

import (
	"bytes"
	"math/big"
)

// pkcs1Key is a two-prime PKCS#1 RSAPrivateKey. The asn1 tags are those
// crypto/x509 reads it with; parsePKCS1 reads the usual form faster.
type pkcs1Key struct {
	Version      int
	N            *big.Int
	E            int
	D, P, Q      *big.Int
	Dp, Dq, Qinv *big.Int `asn1:"optional"`
}

// parsePKCS1 reads a PKCS#1 RSAPrivateKey in its usual form: strict DER,
// version 0, nine positive INTEGERs (the version aside) and nothing after.
// ok is false for anything else, including forms crypto/x509 accepts; every
// input it reads is one encoding/asn1 reads to the same values.
func parsePKCS1(der []byte) (k pkcs1Key, ok bool) {
	body, rest, ok := readTLV(der, tagSequence)
	if !ok || len(rest) > 0 {
		return k, false
	}
	if body, ok = readVersion0(body); !ok {
		return k, false
	}
	var e *big.Int
	for _, x := range []**big.Int{&k.N, &e, &k.D, &k.P, &k.Q, &k.Dp, &k.Dq, &k.Qinv} {
		if *x, body, ok = readPositive(body); !ok {
			return k, false
		}
	}
	if len(body) > 0 || e.BitLen() > 31 {
		return k, false
	}
	k.E = int(e.Int64())
	return k, true
}

// rsaPKCS8 returns the PKCS#1 key inside a PKCS#8 PrivateKeyInfo of an RSA
// key in its usual form: version 0, the rsaEncryption algorithm with NULL
// or absent parameters, no attributes, nothing after. ok is false for
// anything else.
func rsaPKCS8(der []byte) (pkcs1 []byte, ok bool) {
	body, rest, ok := readTLV(der, tagSequence)
	if !ok || len(rest) > 0 {
		return nil, false
	}
	if body, ok = readVersion0(body); !ok {
		return nil, false
	}
	algo, body, ok := readTLV(body, tagSequence)
	if !ok || !bytes.Equal(algo, rsaAlgorithm) && !bytes.Equal(algo, rsaAlgorithm[:len(rsaAlgorithm)-2]) {
		return nil, false
	}
	pkcs1, body, ok = readTLV(body, tagOctetString)
	return pkcs1, ok && len(body) == 0
}

// rsaAlgorithm is the DER body of the rsaEncryption AlgorithmIdentifier:
// OID 1.2.840.113549.1.1.1 and NULL parameters.
var rsaAlgorithm = []byte{0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00}

const (
	tagInteger     = 0x02
	tagOctetString = 0x04
	tagSequence    = 0x30
)

// readTLV reads one DER element of tag from b, with a definite length in
// its minimal form of at most two bytes, and returns its contents and what
// follows.
func readTLV(b []byte, tag byte) (contents, rest []byte, ok bool) {
	if len(b) < 2 || b[0] != tag {
		return nil, nil, false
	}
	n, b := int(b[1]), b[2:]
	switch {
	case n < 0x80:
	case n == 0x81 && len(b) >= 1 && b[0] >= 0x80:
		n, b = int(b[0]), b[1:]
	case n == 0x82 && len(b) >= 2 && b[0] != 0:
		n, b = int(b[0])<<8|int(b[1]), b[2:]
	default:
		return nil, nil, false
	}
	if n > len(b) {
		return nil, nil, false
	}
	return b[:n], b[n:], true
}

// readVersion0 reads the INTEGER 0.
func readVersion0(b []byte) (rest []byte, ok bool) {
	v, rest, ok := readTLV(b, tagInteger)
	return rest, ok && len(v) == 1 && v[0] == 0
}

// readPositive reads a positive INTEGER in minimal form.
func readPositive(b []byte) (*big.Int, []byte, bool) {
	v, rest, ok := readTLV(b, tagInteger)
	if !ok || len(v) == 0 || v[0]&0x80 != 0 || v[0] == 0 && (len(v) == 1 || v[1]&0x80 == 0) {
		return nil, nil, false
	}
	return new(big.Int).SetBytes(v), rest, true
}

// loads reports whether crypto/x509.ParsePKCS1PrivateKey certainly accepts
// k: the checks are those of that function and of crypto/rsa's validation
// of a key with precomputed CRT values (Go 1.26), strict where Go's are
// looser (p·q = n rather than p·q ≡ 0 mod n), and limited to the usual
// form (a modulus of at least 1024 bits, primes far larger than e). A false
// result only means "let the full parse decide".
func (k *pkcs1Key) loads() bool {
	for _, x := range []*big.Int{k.N, k.D, k.P, k.Q, k.Dp, k.Dq, k.Qinv} {
		if x == nil || x.Sign() <= 0 {
			return false
		}
	}
	nBits := k.N.BitLen()
	switch {
	case k.Version != 0, nBits < 1024, k.N.Bit(0) == 0, k.E < 3, k.E&1 == 0, k.E > 1<<31-1,
		k.P.BitLen() <= 33, k.Q.BitLen() <= 33, k.D.Cmp(k.N) >= 0, k.Qinv.Cmp(k.P) >= 0,
		k.D.BitLen() <= nBits/2:
		return false
	}
	var t, m, pm1 big.Int
	if t.Mul(k.P, k.Q).Cmp(k.N) != 0 || t.Sub(k.P, k.Q).BitLen() <= nBits/2-100 {
		return false
	}
	if m.Mod(t.Mul(k.Q, k.Qinv), k.P).Cmp(bigOne) != 0 {
		return false
	}
	e := big.NewInt(int64(k.E))
	for _, c := range [2]struct{ prime, dx *big.Int }{{k.P, k.Dp}, {k.Q, k.Dq}} {
		pm1.Sub(c.prime, bigOne)
		if c.dx.Cmp(&pm1) >= 0 || m.Mod(k.D, &pm1).Cmp(c.dx) != 0 || m.Mod(t.Mul(e, c.dx), &pm1).Cmp(bigOne) != 0 {
			return false
		}
	}
	return true
}

var bigOne = big.NewInt(1)
