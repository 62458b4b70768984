package pki

import (
	"bytes"
	"crypto/x509"
	"encoding/asn1"
	"sync"
	"sync/atomic"
	"time"
)

// LinkCache remembers which CA certificates a root's key has signed, so
// that VerifyChain checks the signature of a link shared by many chains
// once: every client certificate of a fleet chains through the same
// intermediate to the same root, and relay-webhook verifies one chain per
// review.
//
// An entry is the exact DER of the CA certificate and of the root, and
// stands for one thing only: the root's key signed that certificate
// (x509's CheckSignatureFrom succeeded). Only successes are kept. Nothing
// that depends on the time is kept: the validity of every certificate, the
// path length, the usages and the rest of x509's checks are made again at
// each use. The cache holds at most its size in entries, each at most
// maxLinkBytes, and drops an entry at random when full, so any number of
// distinct chains only costs their signature checks.
//
// A nil *LinkCache caches nothing: its VerifyChain is the package's
// VerifyChain without a cache.
type LinkCache struct {
	mu    sync.Mutex
	size  int
	links map[link]struct{}
}

// link is the DER of a CA certificate and of the root that signed it.
type link struct{ child, parent string }

// DefaultLinkCacheSize is the number of links relay-webhook keeps: a
// fleet has a few (each signing CA, previous or current, under each root
// of ca.crt).
const DefaultLinkCacheSize = 128

// maxLinkBytes is the most DER bytes, child and parent together, a cached
// link may hold; larger links are verified every time. Real relay CAs are
// under 2 KiB each.
const maxLinkBytes = 16 << 10

// NewLinkCache returns a cache of at most size links (at least one).
func NewLinkCache(size int) *LinkCache {
	return &LinkCache{size: max(size, 1), links: map[link]struct{}{}}
}

// Len returns the number of links held.
func (c *LinkCache) Len() int {
	if c == nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.links)
}

// processLinks is the cache VerifyChain uses; nil until SetLinkCache.
var processLinks atomic.Pointer[LinkCache]

// SetLinkCache makes every VerifyChain of the process use c (nil: none).
// relay-webhook sets one; other programs verify a chain now and then and
// keep none.
func SetLinkCache(c *LinkCache) { processLinks.Store(c) }

// checkSignature is child.CheckSignatureFrom(parent), with the signature
// itself looked up in c first. The checks of parent that do not need the
// signature (a CA, allowed to sign certificates, with a known key
// algorithm) are made every time, on the certificate as given.
func (c *LinkCache) checkSignature(child, parent *x509.Certificate) error {
	if c == nil || len(child.Raw)+len(parent.Raw) > maxLinkBytes || !maySign(parent) {
		return child.CheckSignatureFrom(parent)
	}
	key := link{child: string(child.Raw), parent: string(parent.Raw)}
	c.mu.Lock()
	_, ok := c.links[key]
	c.mu.Unlock()
	if ok {
		return nil
	}
	if err := child.CheckSignatureFrom(parent); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.links[key]; !ok && len(c.links) >= c.size {
		for k := range c.links {
			delete(c.links, k)
			break
		}
	}
	c.links[key] = struct{}{}
	return nil
}

// maySign reports whether parent passes CheckSignatureFrom's checks that
// come before the signature.
func maySign(parent *x509.Certificate) bool {
	if parent.Version == 3 && !parent.BasicConstraintsValid || parent.BasicConstraintsValid && !parent.IsCA {
		return false
	}
	if parent.KeyUsage != 0 && parent.KeyUsage&x509.KeyUsageCertSign == 0 {
		return false
	}
	return parent.PublicKeyAlgorithm != x509.UnknownPublicKeyAlgorithm && parent.PublicKey != nil
}

// The extensions that decide how a chain verifies besides its links: a
// root may carry only plainRootExtensions (no name constraints, extended
// key usages or policies reaching below it), and no certificate of a
// linked chain carries policyExtensions.
var (
	plainRootExtensions = []asn1.ObjectIdentifier{
		{2, 5, 29, 19}, // basic constraints
		{2, 5, 29, 15}, // key usage
		{2, 5, 29, 14}, // subject key identifier
		{2, 5, 29, 35}, // authority key identifier
	}
	policyExtensions = []asn1.ObjectIdentifier{
		{2, 5, 29, 32}, // certificate policies
		{2, 5, 29, 33}, // policy mappings
		{2, 5, 29, 36}, // policy constraints
		{2, 5, 29, 54}, // inhibit anyPolicy
	}
)

// hasExtension reports whether cert carries an extension of one of oids.
func hasExtension(cert *x509.Certificate, oids []asn1.ObjectIdentifier) bool {
	for _, e := range cert.Extensions {
		for _, oid := range oids {
			if e.Id.Equal(oid) {
				return true
			}
		}
	}
	return false
}

// onlyExtensions reports whether cert carries no extension but oids.
func onlyExtensions(cert *x509.Certificate, oids []asn1.ObjectIdentifier) bool {
	for _, e := range cert.Extensions {
		known := false
		for _, oid := range oids {
			if e.Id.Equal(oid) {
				known = true
				break
			}
		}
		if !known {
			return false
		}
	}
	return true
}

// verifyLinked verifies the usual shapes of a relay chain with the link
// from their CA to a root looked up in c: a leaf, one intermediate and
// roots; or a signing CA and roots. It gives what x509's Verify of the same
// chain gives when it succeeds, and false when it does not or when the
// chain is not of such a shape, so that the caller verifies it the full
// way (and reports x509's error as before):
//
//   - below the CA, x509.Verify itself, with the CA as the anchor: the
//     leaf's signature, validity, usages and names, the CA's validity and
//     constraints;
//   - the root: the one x509 would end the chain at (see linkedRoot: the
//     first, in x509's order, of the roots whose subject is the CA's issuer
//     that is valid now and whose path length allows the chain), and the
//     CA's signature by it, from c; no root named as the leaf's issuer
//     (x509 tries those before the intermediate), the intermediate not the
//     leaf itself;
//   - only when nothing else in the root or the chain would change x509's
//     answer: the root carries only basic constraints, key usage and key
//     identifiers (no name constraints, extended key usages or policies
//     that would reach below it), no certificate carries policy
//     extensions, neither the leaf nor the CA is one of roots.
func (c *LinkCache) verifyLinked(cert *x509.Certificate, intermediates, roots []*x509.Certificate, role Role, now time.Time) ([]*x509.Certificate, bool) {
	if c == nil || len(roots) > MaxChainLength {
		return nil, false
	}
	if now.IsZero() {
		now = time.Now()
	}
	var ca *x509.Certificate
	below := []*x509.Certificate{cert}
	switch {
	case len(intermediates) == 1:
		ca = intermediates[0]
		below = append(below, ca)
		if !ca.BasicConstraintsValid || !ca.IsCA || bytes.Equal(ca.Raw, cert.Raw) {
			// (x509 does not chain a certificate through itself)
			return nil, false
		}
	case len(intermediates) == 0 && role == RoleSigningCA:
		ca = cert
	default:
		return nil, false
	}
	for _, b := range below {
		if len(b.Raw) == 0 || hasExtension(b, policyExtensions) {
			return nil, false
		}
		for _, r := range roots {
			if bytes.Equal(b.Raw, r.Raw) {
				return nil, false
			}
		}
	}
	if ca != cert {
		// x509 tries the roots named as the leaf's issuer before the
		// intermediate, and may end the chain at one of them.
		for _, r := range roots {
			if bytes.Equal(r.RawSubject, cert.RawIssuer) {
				return nil, false
			}
		}
	}
	root := c.linkedRoot(ca, below, roots, now)
	if root == nil {
		return nil, false
	}
	if ca == cert {
		// x509's checks of the certificate verified: valid now, every
		// critical extension handled. Its usages are not checked for a
		// signing CA (any usage), and nothing is below it.
		if len(cert.UnhandledCriticalExtensions) > 0 || now.Before(cert.NotBefore) || now.After(cert.NotAfter) {
			return nil, false
		}
		return []*x509.Certificate{cert, root}, true
	}
	anchor := x509.NewCertPool()
	anchor.AddCert(ca)
	chains, err := cert.Verify(x509.VerifyOptions{
		Roots:         anchor,
		Intermediates: x509.NewCertPool(),
		CurrentTime:   now,
		KeyUsages:     role.verifyUsage(),
	})
	if err != nil || len(chains) == 0 || len(chains[0]) != 2 || chains[0][1] != ca {
		return nil, false
	}
	return []*x509.Certificate{cert, ca, root}, true
}

// linkedRoot returns the root x509 would end the chain at as the issuer of
// ca, the last of chain (nearest the root), or nil when it is not sure to
// tell. x509 tries the roots whose subject is ca's issuer in the order of
// keyIDOrder, and takes the first that is valid now, whose path length
// allows the intermediates of chain and whose key signed ca (through c); a
// root it would try that the short way does not model (in chain already,
// with an unhandled critical extension or a constraint that reaches below
// it) gives nil, for the full way.
func (c *LinkCache) linkedRoot(ca *x509.Certificate, chain, roots []*x509.Certificate, now time.Time) *x509.Certificate {
	for order := range 3 {
		for _, r := range roots {
			if len(r.Raw) == 0 || r.PublicKey == nil || !bytes.Equal(r.RawSubject, ca.RawIssuer) || keyIDOrder(r, ca) != order {
				continue
			}
			for _, b := range chain {
				if bytes.Equal(r.RawSubject, b.RawSubject) {
					return nil
				}
			}
			if len(r.UnhandledCriticalExtensions) > 0 || !onlyExtensions(r, plainRootExtensions) {
				return nil
			}
			if now.Before(r.NotBefore) || now.After(r.NotAfter) {
				continue
			}
			if r.BasicConstraintsValid && r.MaxPathLen >= 0 && len(chain)-1 > r.MaxPathLen {
				continue
			}
			if c.checkSignature(ca, r) != nil {
				continue
			}
			return r
		}
	}
	return nil
}

// keyIDOrder is the rank x509 tries parent at as the issuer of child:
// 0 when parent's key identifier is child's authority key identifier, 1
// when only one of them is present, 2 when they differ.
func keyIDOrder(parent, child *x509.Certificate) int {
	switch {
	case bytes.Equal(parent.SubjectKeyId, child.AuthorityKeyId):
		return 0
	case len(parent.SubjectKeyId) == 0 != (len(child.AuthorityKeyId) == 0):
		return 1
	}
	return 2
}
