package pki

import (
	"crypto"
	"crypto/x509"
	"errors"
)

// KeyMatchesCertificate returns an error unless key is the private key of
// cert's public key.
func KeyMatchesCertificate(key crypto.Signer, cert *x509.Certificate) error {
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(cert.PublicKey) {
		return errors.New("private key does not match the certificate: tls.key belongs to another certificate")
	}
	return nil
}
