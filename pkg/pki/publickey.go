package pki

import (
	"crypto"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
	"math/big"
)

// PublicKeyOfPrivateKey decodes one PEM private key, as DecodePrivateKey
// accepts, and returns its public half. An RSA key is read structurally
// and checked for consistency (rsaConsistent) without the precomputation
// and pairwise test of DecodePrivateKey, which cost more than verifying a
// whole chain; ECDSA and Ed25519 keys are parsed fully, which derives the
// public half from the private scalar. It is what checking "tls.key matches tls.crt"
// needs; load a key with DecodePrivateKey to sign with it.
func PublicKeyOfPrivateKey(data []byte) (crypto.PublicKey, error) {
	b, err := keyBlock(data)
	if err != nil {
		return nil, err
	}
	der := b.Bytes
	switch b.Type {
	case blockSEC1:
		return publicOfFull(data)
	case blockPKCS8:
		var p8 struct {
			Version    int
			Algo       pkix.AlgorithmIdentifier
			PrivateKey []byte
		}
		if rest, err := asn1.Unmarshal(der, &p8); err != nil || len(rest) > 0 {
			return publicOfFull(data)
		}
		if !p8.Algo.Algorithm.Equal(oidRSA) {
			return publicOfFull(data)
		}
		der = p8.PrivateKey
	}
	var k struct {
		Version               int
		N                     *big.Int
		E                     int
		D, P, Q, Dp, Dq, Qinv *big.Int
		AdditionalPrimes      []asn1.RawValue `asn1:"optional"`
	}
	if rest, err := asn1.Unmarshal(der, &k); err != nil || len(rest) > 0 {
		return nil, keyError(b, fmt.Sprintf("failed to parse RSA private key: %v", orTrailing(err)))
	}
	if len(k.AdditionalPrimes) > 0 {
		return publicOfFull(data)
	}
	if !rsaConsistent(k.N, k.E, k.D, k.P, k.Q) {
		return nil, keyError(b, "RSA private key is inconsistent: its primes, modulus and exponents do not belong together")
	}
	return &rsa.PublicKey{N: k.N, E: k.E}, nil
}

// rsaConsistent reports whether d, p and q are a private key for (n, e):
// p·q = n and e·d ≡ 1 modulo p−1 and q−1. These few multiplications prove
// the key belongs to the modulus without the precomputation and pairwise
// test of a full load.
func rsaConsistent(n *big.Int, e int, d, p, q *big.Int) bool {
	one := big.NewInt(1)
	if n.Sign() <= 0 || e < 3 || d.Sign() <= 0 || p.Cmp(one) <= 0 || q.Cmp(one) <= 0 {
		return false
	}
	if new(big.Int).Mul(p, q).Cmp(n) != 0 {
		return false
	}
	ed := new(big.Int).Mul(d, big.NewInt(int64(e)))
	for _, prime := range []*big.Int{p, q} {
		pm1 := new(big.Int).Sub(prime, one)
		if new(big.Int).Mod(ed, pm1).Cmp(one) != 0 {
			return false
		}
	}
	return true
}

var oidRSA = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 1}

func publicOfFull(data []byte) (crypto.PublicKey, error) {
	key, err := DecodePrivateKey(data)
	if err != nil {
		return nil, err
	}
	return key.Public(), nil
}

func orTrailing(err error) error {
	if err == nil {
		return fmt.Errorf("trailing data")
	}
	return err
}

// PublicKeyMatchesCertificate returns an error unless pub is cert's public key.
func PublicKeyMatchesCertificate(pub crypto.PublicKey, cert *x509.Certificate) error {
	k, ok := pub.(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !k.Equal(cert.PublicKey) {
		return errMismatch
	}
	return nil
}
