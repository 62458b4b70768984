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

var errMismatch = errors.New("private key does not match the certificate: tls.key belongs to another certificate")
