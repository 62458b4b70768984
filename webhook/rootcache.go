package webhook

import (
	"bytes"
	"crypto/x509"
	"slices"
	"sync/atomic"

	"github.com/meshrelay/meshrelay/pkg/pki"
)

// rootCache keeps relay-root-tls-secret's ca.crt parsed: every review of
// a signing, server or client secret verifies to it, and it changes once
// in a root rotation. It holds the last ca.crt it parsed, by its bytes, so
// a read of other bytes (a new root, or the live read of a confirmation)
// is parsed again; the certificates it hands out are shared, read-only,
// and their slice is clipped so that an append copies it. A nil cache
// parses every time.
type rootCache struct {
	last atomic.Pointer[parsedRoots]
}

// parsedRoots are the certificates of one ca.crt.
type parsedRoots struct {
	pem   []byte
	certs []*x509.Certificate
}

// decode returns the certificates of caPEM, as pki.DecodeCertificates
// does.
func (c *rootCache) decode(caPEM []byte) ([]*x509.Certificate, error) {
	if c == nil {
		return pki.DecodeCertificates(caPEM)
	}
	if p := c.last.Load(); p != nil && bytes.Equal(p.pem, caPEM) {
		return p.certs, nil
	}
	certs, err := pki.DecodeCertificates(caPEM)
	if err != nil {
		return nil, err
	}
	certs = slices.Clip(certs)
	c.last.Store(&parsedRoots{pem: bytes.Clone(caPEM), certs: certs})
	return certs, nil
}
