package pki

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
)

// NewCSR returns a PEM certificate request signed by key for dnsNames, with
// the first name as common name: what an agent sends to be certified.
func NewCSR(key crypto.Signer, dnsNames ...string) ([]byte, error) {
	if len(dnsNames) == 0 {
		return nil, fmt.Errorf("certificate request needs at least one DNS name")
	}
	for _, n := range dnsNames {
		if err := CheckDNSName(n, false); err != nil {
			return nil, err
		}
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject:  pkix.Name{CommonName: dnsNames[0]},
		DNSNames: dnsNames,
	}, key)
	if err != nil {
		return nil, fmt.Errorf("failed to create certificate request: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: blockCSR, Bytes: der}), nil
}
