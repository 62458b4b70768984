package agent

import (
	"crypto/x509"
	"sync"
	"sync/atomic"

	"github.com/meshrelay/meshrelay/pkg/trustbundle"
)

// rootSet holds the agent's trust anchors, the roots that verify the relay
// server: the local roots, which the watcher sets (the trust bundle folder,
// or relay-root-tls-secret's ca.crt, or the client secret's ca.crt when
// these hold none), together with the last trust bundle the server pushed
// and the agent accepted. A root the server adds is trusted at once; a root
// leaves only when both the server's bundle and the local roots have
// dropped it, so that neither a slow kubelet nor a stale push takes away a
// root that still verifies the server. Every handshake reads the set anew.
type rootSet struct {
	mu            sync.Mutex
	local, pushed []*x509.Certificate
	fingerprint   string
	cur           atomic.Pointer[[]*x509.Certificate]
	// changed, when set, is called with the roots after each change, under
	// the set's lock, so that calls come in order.
	changed func([]*x509.Certificate)
}

// setLocal replaces the local roots and reports whether the anchors
// changed.
func (r *rootSet) setLocal(roots []*x509.Certificate) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.local = roots
	return r.update()
}

// setPushed replaces the roots of the server's bundle and reports whether
// the anchors changed.
func (r *rootSet) setPushed(roots []*x509.Certificate) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pushed = roots
	return r.update()
}

// update makes the anchors the local roots and the pushed ones, each
// once; r.mu is held.
func (r *rootSet) update() bool {
	all := trustbundle.Unique(append(append([]*x509.Certificate(nil), r.local...), r.pushed...))
	fp := trustbundle.Fingerprint(all)
	if fp == r.fingerprint {
		if r.cur.Load() == nil {
			r.cur.Store(&all)
		}
		return false
	}
	r.fingerprint = fp
	r.cur.Store(&all)
	if r.changed != nil {
		r.changed(all)
	}
	return true
}

// Get returns the anchors, or nil before the first set.
func (r *rootSet) Get() []*x509.Certificate {
	if p := r.cur.Load(); p != nil {
		return *p
	}
	return nil
}

// pushedRoots returns the roots of the server's bundle the agent accepted
// last, or nil.
func (r *rootSet) pushedRoots() []*x509.Certificate {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.pushed
}
