package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"fmt"
)

// Minimum key sizes meshrelay accepts in any certificate: RSA 2048 bits,
// ECDSA P-256.
const (
	MinRSABits   = 2048
	MinECDSABits = 256
)

// CheckKeyStrength returns an error when pub is weaker than RSA 2048 or
// ECDSA P-256, or of a type meshrelay does not use.
func CheckKeyStrength(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if n := k.N.BitLen(); n < MinRSABits {
			return fmt.Errorf("RSA key of %d bits is too weak: use RSA %d bits or more, or ECDSA P-256", n, MinRSABits)
		}
	case *ecdsa.PublicKey:
		if n := k.Curve.Params().BitSize; n < MinECDSABits {
			return fmt.Errorf("ECDSA key on a %d-bit curve is too weak: use ECDSA P-256 or P-384", n)
		}
	case ed25519.PublicKey:
	default:
		return fmt.Errorf("unsupported public key type %T: use ECDSA P-256, RSA 2048 or Ed25519", pub)
	}
	return nil
}
