package agent

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/utils/clock"
)

// cacheReads is a secretReader whose first read returns what the cache
// held before a renewal reached it, and waits before returning it; every
// later read returns the renewed certificate.
type cacheReads struct {
	mu             sync.Mutex
	reads          int
	first, renewed *material
	release        chan struct{}
	firstRead      chan struct{}
}

func (c *cacheReads) read(context.Context, string, time.Time) (*material, error) {
	c.mu.Lock()
	c.reads++
	n := c.reads
	c.mu.Unlock()
	if n == 1 {
		close(c.firstRead)
		<-c.release
		return c.first, nil
	}
	return c.renewed, nil
}

// TestConcurrentLoadsNeverSetTheOlderCertificateLast checks that two loads
// at once (the secret watch and the rotator) leave the provider with what
// the later read found: a load that read the cache before the renewed
// certificate reached it must not set the old one after the other load
// set the renewed one. Left so for a moment, the streams' handover made a
// connection with the old certificate (found by the rotation soak).
func TestConcurrentLoadsNeverSetTheOlderCertificateLast(t *testing.T) {
	ca := newRelayCA(t, "relay", time.Now())
	old, renewed := issuedClientCertificate(t, ca), issuedClientCertificate(t, ca)
	reads := &cacheReads{first: &material{client: old}, renewed: &material{client: renewed}, release: make(chan struct{}), firstRead: make(chan struct{})}
	gauge := func() prometheus.Gauge { return prometheus.NewGauge(prometheus.GaugeOpts{Name: "g"}) }
	p := NewProvider()
	w := newWatcher(watcherOptions{Secrets: reads, Cluster: "cluster-1", Provider: p, Roots: &rootSet{},
		Cert: certGauges{NotBefore: gauge(), NotAfter: gauge(), Renewal: gauge()}, GraceRatio: 0.35, Clock: clock.RealClock{}, Log: logr.Discard()})

	slow := make(chan struct{})
	go func() { defer close(slow); _, _ = w.load(t.Context()) }()
	<-reads.firstRead
	fast := make(chan struct{})
	go func() { defer close(fast); _, _ = w.load(t.Context()) }()
	// The second load read the renewed certificate, or waits for the
	// first to finish: let the first return what it read.
	select {
	case <-fast:
	case <-time.After(200 * time.Millisecond):
	}
	close(reads.release)
	<-slow
	<-fast
	if got := p.Current(); got == nil || !got.Leaf.Equal(renewed.Leaf) {
		t.Fatalf("the provider holds serial %v after both loads, want the renewed certificate (serial %v), which the later read found",
			got.Leaf.SerialNumber, renewed.Leaf.SerialNumber)
	}
}
