package agent

import (
	"crypto/tls"
	"errors"
	"sync"
)

// Provider holds the client certificate the agent connects with. Every new
// TLS handshake asks it for the current certificate, so a rotation takes
// effect on the next connection while established streams stay up.
type Provider struct {
	mu      sync.RWMutex
	cert    *tls.Certificate
	changed chan struct{}
}

// NewProvider returns an empty provider; Set fills it.
func NewProvider() *Provider {
	return &Provider{changed: make(chan struct{})}
}

// Set makes cert (whose Leaf must be parsed) the certificate of the next
// handshakes.
func (p *Provider) Set(cert *tls.Certificate) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cert = cert
	close(p.changed)
	p.changed = make(chan struct{})
}

// fixedProvider returns a provider that holds cert and never changes: a
// connection dialled with it presents cert at every handshake.
func fixedProvider(cert *tls.Certificate) *Provider {
	p := NewProvider()
	p.Set(cert)
	return p
}

// Current returns the current certificate, or nil when none is set.
func (p *Provider) Current() *tls.Certificate {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.cert
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
	cert := p.Current()
	if cert == nil {
		return nil, errors.New("no client certificate yet: the agent has not bootstrapped")
	}
	return cert, nil
}
