package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"fmt"
	"slices"
	"strings"
)

// Algorithm is a public key algorithm.
type Algorithm string

// The key algorithms meshrelay makes and accepts.
const (
	ECDSA   Algorithm = "ECDSA"
	RSA     Algorithm = "RSA"
	Ed25519 Algorithm = "Ed25519"
)

// KeySpec is an algorithm and its size: the curve size in bits for ECDSA,
// the modulus size for RSA, 0 for Ed25519. The zero value is ECDSA P-256.
type KeySpec struct {
	Algorithm Algorithm
	Bits      int
}

// The key specs meshrelay supports.
var (
	ECDSAP256  = KeySpec{ECDSA, 256}
	ECDSAP384  = KeySpec{ECDSA, 384}
	RSA2048    = KeySpec{RSA, 2048}
	RSA3072    = KeySpec{RSA, 3072}
	RSA4096    = KeySpec{RSA, 4096}
	Ed25519Key = KeySpec{Ed25519, 0}
)

// DefaultAllowedKeys are the keys a Policy accepts when it names none.
var DefaultAllowedKeys = []KeySpec{ECDSAP256, ECDSAP384, RSA2048, RSA3072, RSA4096, Ed25519Key}

func (k KeySpec) orDefault() KeySpec {
	if k == (KeySpec{}) {
		return ECDSAP256
	}
	return k
}

func (k KeySpec) String() string {
	k = k.orDefault()
	switch k.Algorithm {
	case ECDSA:
		return fmt.Sprintf("ECDSA P-%d", k.Bits)
	case Ed25519:
		return "Ed25519"
	}
	return fmt.Sprintf("%s %d", k.Algorithm, k.Bits)
}

// GenerateKey makes a new private key of spec (ECDSA P-256 for the zero
// value).
func GenerateKey(spec KeySpec) (crypto.Signer, error) {
	spec = spec.orDefault()
	switch spec {
	case ECDSAP256:
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case ECDSAP384:
		return ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case RSA2048, RSA3072, RSA4096:
		return rsa.GenerateKey(rand.Reader, spec.Bits)
	case Ed25519Key:
		_, key, err := ed25519.GenerateKey(rand.Reader)
		return key, err
	}
	return nil, fmt.Errorf("unsupported key %s: use one of %s", spec, specList(DefaultAllowedKeys))
}

// KeySpecOf returns the algorithm and size of a public key.
func KeySpecOf(pub crypto.PublicKey) (KeySpec, error) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		return KeySpec{ECDSA, k.Curve.Params().BitSize}, nil
	case *rsa.PublicKey:
		return KeySpec{RSA, k.N.BitLen()}, nil
	case ed25519.PublicKey:
		return Ed25519Key, nil
	}
	return KeySpec{}, fmt.Errorf("unsupported public key type %T", pub)
}

// checkAllowed returns an error naming the key and the allowed list when
// pub is not one of allowed.
func checkAllowed(pub crypto.PublicKey, allowed []KeySpec) error {
	spec, err := KeySpecOf(pub)
	if err != nil {
		return err
	}
	if !slices.Contains(allowed, spec) {
		return fmt.Errorf("key %s is not allowed: use one of %s", spec, specList(allowed))
	}
	return nil
}

func specList(specs []KeySpec) string {
	names := make([]string, len(specs))
	for i, s := range specs {
		names[i] = s.String()
	}
	return strings.Join(names, ", ")
}
