package pki

import (
	"crypto/x509"
	"errors"
	"fmt"
	"time"
)

// VerifyChain verifies cert for role at now and returns the chain it
// verified, from cert to a root:
//   - RoleRoot: cert is a self-signed CA allowed to sign certificates;
//     roots are ignored.
//   - RoleSigningCA: cert is a CA allowed to sign certificates and chains
//     through intermediates to one of roots.
//   - RoleServer, RoleClient: cert is not a CA, carries the server or client
//     auth usage, and chains through intermediates to one of roots with that
//     usage allowed all the way.
//
// With a LinkCache set (SetLinkCache), the signature of a CA by a root is
// checked once per CA and root (see LinkCache); every other check is made
// at each call, and a chain that does not verify is verified again the
// full way, so that its error is x509's.
func VerifyChain(cert *x509.Certificate, intermediates, roots []*x509.Certificate, role Role, now time.Time) ([]*x509.Certificate, error) {
	return processLinks.Load().VerifyChain(cert, intermediates, roots, role, now)
}

// VerifyChain is the package's VerifyChain with c as its cache of links.
func (c *LinkCache) VerifyChain(cert *x509.Certificate, intermediates, roots []*x509.Certificate, role Role, now time.Time) ([]*x509.Certificate, error) {
	if role.isCA() {
		if !cert.BasicConstraintsValid || !cert.IsCA {
			return nil, fmt.Errorf("certificate %q is not a CA: a %s needs basic constraints CA:TRUE", cert.Subject.CommonName, role)
		}
		if cert.KeyUsage != 0 && cert.KeyUsage&x509.KeyUsageCertSign == 0 {
			return nil, fmt.Errorf("CA certificate %q may not sign certificates: add the keyCertSign key usage", cert.Subject.CommonName)
		}
	} else if cert.IsCA {
		return nil, fmt.Errorf("certificate %q is a CA: a %s certificate must not be one", cert.Subject.CommonName, role)
	}
	if role == RoleRoot {
		if err := cert.CheckSignatureFrom(cert); err != nil {
			return nil, fmt.Errorf("certificate %q is not self-signed: a root CA signs itself: %w", cert.Subject.CommonName, err)
		}
		if err := CheckValidity(cert, now); err != nil {
			return nil, err
		}
		return []*x509.Certificate{cert}, nil
	}
	if len(roots) == 0 {
		return nil, errors.New("no root CA to verify against: ca.crt is empty")
	}
	if chain, ok := c.verifyLinked(cert, intermediates, roots, role, now); ok {
		return chain, nil
	}
	opts := x509.VerifyOptions{
		Roots:         x509.NewCertPool(),
		Intermediates: x509.NewCertPool(),
		CurrentTime:   now,
		KeyUsages:     role.verifyUsage(),
	}
	for _, r := range roots {
		opts.Roots.AddCert(r)
	}
	for _, c := range intermediates {
		opts.Intermediates.AddCert(c)
	}
	chains, err := cert.Verify(opts)
	if err != nil {
		var invalid x509.CertificateInvalidError
		if errors.As(err, &invalid) && invalid.Reason == x509.Expired {
			if verr := CheckValidity(invalid.Cert, now); verr != nil {
				return nil, fmt.Errorf("%s certificate chain does not verify: %q: %w", role, invalid.Cert.Subject.CommonName, verr)
			}
		}
		return nil, fmt.Errorf("%s certificate chain does not verify to the root CA: %w", role, err)
	}
	return chains[0], nil
}
