package pki

import (
	"crypto"
	"crypto/x509"
	"errors"
)

// KeyMatchesCertificate returns an error unless key is the private key of
// cert's public key.
func KeyMatchesCertificate(key crypto.Signer, cert *x509.Certificate) error {
	return PublicKeyMatchesCertificate(key.Public(), cert)
}

// PublicKeyMatchesCertificate returns an error unless pub is cert's public key.
func PublicKeyMatchesCertificate(pub crypto.PublicKey, cert *x509.Certificate) error {
	k, ok := pub.(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !k.Equal(cert.PublicKey) {
		return errMismatch
	}
	return nil
}

var errMismatch = errors.New("private key does not match the certificate: tls.key belongs to another certificate")
