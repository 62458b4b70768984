package pki

import (
	"crypto"
	"crypto/rsa"
	"crypto/x509"
)

// PublicKeyOfPrivateKey decodes one PEM private key, as DecodePrivateKey
// accepts, and returns its public half. It is what checking "tls.key
// matches tls.crt" needs; load a key with DecodePrivateKey to sign with it.
//
// It accepts exactly the inputs DecodePrivateKey accepts and fails with the
// same errors. ECDSA and Ed25519 keys are fully parsed. A two-prime RSA key
// in its usual form (PKCS#1, or PKCS#8 around it) is read directly and
// accepted once it passes every check crypto/x509 and crypto/rsa make when
// loading it (see pkcs1Key.loads): a few multiplications of the key's own
// values instead of the Montgomery precomputation of a full load, which
// costs more than verifying a whole chain. Any RSA key this fast path does
// not accept is handed to DecodePrivateKey for the verdict, so the fast
// path can only say yes where the full parse says yes.
func PublicKeyOfPrivateKey(data []byte) (crypto.PublicKey, error) {
	b, err := keyBlock(data)
	if err != nil {
		return nil, err
	}
	der, ok := b.Bytes, true
	switch b.Type {
	case blockSEC1:
		return publicOfFull(data)
	case blockPKCS8:
		der, ok = rsaPKCS8(der)
	}
	if !ok {
		return publicOfFull(data)
	}
	k, ok := parsePKCS1(der)
	if !ok || !k.loads() {
		return publicOfFull(data)
	}
	return &rsa.PublicKey{N: k.N, E: k.E}, nil
}

func publicOfFull(data []byte) (crypto.PublicKey, error) {
	key, err := DecodePrivateKey(data)
	if err != nil {
		return nil, err
	}
	return key.Public(), nil
}

// PublicKeyMatchesCertificate returns an error unless pub is cert's public key.
func PublicKeyMatchesCertificate(pub crypto.PublicKey, cert *x509.Certificate) error {
	k, ok := pub.(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !k.Equal(cert.PublicKey) {
		return errMismatch
	}
	return nil
}
