package agent

import (
	"crypto/x509"
	"sync/atomic"
)

// signal is a one-slot notification between roles: notify never blocks,
// and notifications sent before the receiver looks count as one.
type signal chan struct{}

func newSignal() signal { return make(signal, 1) }

// notify wakes the receiver, or does nothing when it is already due to wake.
func (s signal) notify() {
	select {
	case s <- struct{}{}:
	default:
	}
}

// rootSet holds the root CAs that verify the relay server: the watcher sets
// them from the secrets, the streams from the server's trust bundle.
type rootSet struct {
	p atomic.Pointer[[]*x509.Certificate]
}

// Set replaces the roots.
func (r *rootSet) Set(roots []*x509.Certificate) { r.p.Store(&roots) }

// Get returns the current roots, or nil before the first Set.
func (r *rootSet) Get() []*x509.Certificate {
	if p := r.p.Load(); p != nil {
		return *p
	}
	return nil
}
