package agent

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/meshrelay/meshrelay/pkg/pki"
	"github.com/meshrelay/meshrelay/pkg/trustbundle"
)

// pushedBundle is a trust bundle the server pushed and the agent accepted.
type pushedBundle struct {
	// pem is the bundle exactly as the server sent it, and sha its hex
	// SHA-256, which acknowledges it.
	pem []byte
	sha string
	// roots are its certificates, and fingerprint their
	// trustbundle.Fingerprint.
	roots       []*x509.Certificate
	fingerprint string
}

// acceptBundle decodes a trust bundle the server pushed on a connection
// whose server presented chain (its certificate first), and accepts it
// only when every certificate in it is a CA and one of them verifies that
// server certificate for authority at now: a bundle that would not even
// verify the server it came from is a mistake, never to be trusted or
// persisted.
func acceptBundle(bundle []byte, chain []*x509.Certificate, authority string, now time.Time) (*pushedBundle, error) {
	roots, err := pki.DecodeCertificates(bundle)
	if err != nil {
		return nil, fmt.Errorf("trust bundle does not decode: %w", err)
	}
	for _, r := range roots {
		if !r.BasicConstraintsValid || !r.IsCA {
			return nil, fmt.Errorf("trust bundle holds %q, which is not a CA certificate: a trust bundle holds only the relay roots", r.Subject.CommonName)
		}
	}
	if len(chain) == 0 {
		return nil, errors.New("trust bundle came on a connection without a server certificate (insecure mode), which it cannot be checked against")
	}
	if _, err := verifyServer(chain, roots, authority, now); err != nil {
		return nil, fmt.Errorf("trust bundle of %d roots does not verify the certificate of the relay server it came from (%q, issued by %q): %w",
			len(roots), chain[0].Subject.CommonName, chain[0].Issuer.CommonName, err)
	}
	sum := sha256.Sum256(bundle)
	return &pushedBundle{pem: bundle, sha: hex.EncodeToString(sum[:]), roots: roots, fingerprint: trustbundle.Fingerprint(roots)}, nil
}

// verifyServer verifies the relay server's chain (its certificate, then
// the intermediates it sent) to roots, for serverAuth and the DNS name
// authority, at now, as Go's TLS client does; it returns the chains found.
func verifyServer(chain, roots []*x509.Certificate, authority string, now time.Time) ([][]*x509.Certificate, error) {
	opts := x509.VerifyOptions{
		Roots:         x509.NewCertPool(),
		Intermediates: x509.NewCertPool(),
		DNSName:       authority,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, r := range roots {
		opts.Roots.AddCert(r)
	}
	for _, c := range chain[1:] {
		opts.Intermediates.AddCert(c)
	}
	return chain[0].Verify(opts)
}

// trustBundles follows the bundles the server pushes, on every replica:
// the last one accepted, and the one acknowledged to the server. A replica
// acknowledges a bundle once the roots kept in its cluster (the trust
// bundle folder, or relay-root-tls-secret's ca.crt) are that bundle's, or,
// on the leader, once it has written it there itself.
type trustBundles struct {
	// wake tells the writer a bundle came.
	wake signal
	// statusChanged asks for a fresh status, carrying the acknowledgement.
	statusChanged func()

	mu     sync.Mutex
	latest *pushedBundle
	acked  string
	// persisted is the fingerprint of the roots kept in the cluster, as
	// the watcher read them last.
	persisted string
}

func newTrustBundles(statusChanged func()) *trustBundles {
	return &trustBundles{wake: newSignal(), statusChanged: statusChanged}
}

// offer records b as the latest bundle, acknowledges it if the cluster
// already keeps its roots, and wakes the writer.
func (t *trustBundles) offer(b *pushedBundle) {
	t.mu.Lock()
	t.latest = b
	acked := t.ackLocked(b.fingerprint == t.persisted)
	t.mu.Unlock()
	t.wake.notify()
	if acked {
		t.statusChanged()
	}
}

// observe records the fingerprint of the roots kept in the cluster, and
// acknowledges the latest bundle when they are its roots.
func (t *trustBundles) observe(fingerprint string) {
	t.mu.Lock()
	t.persisted = fingerprint
	acked := t.latest != nil && t.ackLocked(t.latest.fingerprint == fingerprint)
	t.mu.Unlock()
	if acked {
		t.statusChanged()
	}
}

// written acknowledges the bundle with sha, which the writer has stored in
// the cluster, unless a newer bundle came meanwhile (it is written next).
func (t *trustBundles) written(sha string) {
	t.mu.Lock()
	acked := t.latest != nil && t.ackLocked(t.latest.sha == sha)
	t.mu.Unlock()
	if acked {
		t.statusChanged()
	}
}

// ackLocked acknowledges the latest bundle when ok, and reports whether
// the acknowledgement changed; t.mu is held.
func (t *trustBundles) ackLocked(ok bool) bool {
	if !ok || t.acked == t.latest.sha {
		return false
	}
	t.acked = t.latest.sha
	return true
}

// pending returns the latest bundle, or nil.
func (t *trustBundles) pending() *pushedBundle {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.latest
}

// acknowledged returns the hex SHA-256 of the bundle acknowledged last, or
// "".
func (t *trustBundles) acknowledged() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.acked
}
