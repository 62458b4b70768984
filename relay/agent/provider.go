package agent

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"sync"
)

// Provider holds the client certificate the agent connects with. Every new
// TLS handshake asks it for the current certificate, so a rotation takes
// effect on the next connection while established streams stay up.
type Provider struct {
	mu      sync.RWMutex
	cert    *tls.Certificate
	roots   *x509.CertPool
	changed chan struct{}
}

// NewProvider returns an empty provider; Set fills it.
func NewProvider() *Provider {
	return &Provider{changed: make(chan struct{})}
}

// Set makes cert (whose Leaf must be parsed) the certificate of the next
// handshakes, and roots the pool that verifies the server.
func (p *Provider) Set(cert *tls.Certificate, roots *x509.CertPool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cert, p.roots = cert, roots
	close(p.changed)
	p.changed = make(chan struct{})
}

// Current returns the current certificate and roots, or nil when none is set.
func (p *Provider) Current() (*tls.Certificate, *x509.CertPool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.cert, p.roots
}

// Changed returns a channel closed at the next Set.
func (p *Provider) Changed() <-chan struct{} {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.changed
}

// GetClientCertificate is a tls.Config.GetClientCertificate that returns the
// current certificate.
func (p *Provider) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	cert, _ := p.Current()
	if cert == nil {
		return nil, errors.New("no client certificate yet: the agent has not bootstrapped")
	}
	return cert, nil
}
