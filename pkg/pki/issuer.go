package pki

import (
	"bytes"
	"crypto/x509"
	"fmt"
)

// SameCA reports whether a and b are the same certificate authority: the
// same subject and the same public key. A CA re-issued with its key kept
// (a renewed intermediate) is the same CA; another CA that copies the
// subject, or the same name with a new key, is not. Issuer pinning compares
// issuers with it, never by name alone.
func SameCA(a, b *x509.Certificate) bool {
	if a == nil || b == nil {
		return false
	}
	return bytes.Equal(a.RawSubject, b.RawSubject) && bytes.Equal(a.RawSubjectPublicKeyInfo, b.RawSubjectPublicKeyInfo)
}

// ContainsCA reports whether one of cas is the same CA as ca.
func ContainsCA(cas []*x509.Certificate, ca *x509.Certificate) bool {
	for _, c := range cas {
		if SameCA(c, ca) {
			return true
		}
	}
	return false
}

// DirectIssuer returns the certificate among candidates that signed cert:
// its subject is cert's issuer and its key verifies cert's signature. It
// is how a holder of a certificate and its chain (tls.crt, then ca.crt)
// learns which CA issued it.
func DirectIssuer(cert *x509.Certificate, candidates []*x509.Certificate) (*x509.Certificate, error) {
	for _, c := range candidates {
		if c == nil || !bytes.Equal(c.RawSubject, cert.RawIssuer) {
			continue
		}
		if cert.CheckSignatureFrom(c) == nil {
			return c, nil
		}
	}
	return nil, fmt.Errorf("certificate %q: none of the %d certificates beside it issued it: put its issuer after it in tls.crt, or its root in ca.crt", cert.Subject.CommonName, len(candidates))
}

// CAName names a CA certificate for people: its subject's common name (or
// whole subject when it has none) and the start of its SHA-256
// fingerprint, which tells apart two CAs of the same name.
func CAName(c *x509.Certificate) string {
	if c == nil {
		return "none"
	}
	name := c.Subject.CommonName
	if name == "" {
		name = c.Subject.String()
	}
	return fmt.Sprintf("%q (SHA-256 %s)", name, Fingerprint(c)[:16])
}
