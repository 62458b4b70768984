package server

import (
	"context"
	"sync"
)

// streamKind is the direction of a long-lived agent stream.
type streamKind string

const (
	pushStream streamKind = "push"
	pullStream streamKind = "pull"
)

// connections tracks the open push and pull streams of each cluster, keeps
// the relay_*_clients_connected gauges equal to them, and drops every
// stream of a cluster whose registration is deleted.
type connections struct {
	metrics *metrics

	mu      sync.Mutex
	next    uint64
	streams map[string]map[uint64]stream
}

type stream struct {
	kind   streamKind
	cancel context.CancelFunc
}

func newConnections(m *metrics) *connections {
	return &connections{metrics: m, streams: map[string]map[uint64]stream{}}
}

// open records a stream of cluster; cancel ends it when the cluster is
// dropped. The returned close must be called when the stream ends.
func (c *connections) open(cluster string, kind streamKind, cancel context.CancelFunc) (close func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.next++
	id := c.next
	if c.streams[cluster] == nil {
		c.streams[cluster] = map[uint64]stream{}
	}
	c.streams[cluster][id] = stream{kind: kind, cancel: cancel}
	c.metrics.connected(kind, cluster).Inc()
	c.metrics.opened.WithLabelValues(cluster, string(kind)).Inc()
	var once sync.Once
	return func() {
		once.Do(func() {
			c.mu.Lock()
			defer c.mu.Unlock()
			if _, ok := c.streams[cluster][id]; !ok {
				return
			}
			delete(c.streams[cluster], id)
			if len(c.streams[cluster]) == 0 {
				delete(c.streams, cluster)
			}
			c.metrics.connected(kind, cluster).Dec()
		})
	}
}

// drop cancels every open stream of cluster. Each stream's handler returns
// and calls its close, which updates the gauges.
func (c *connections) drop(cluster string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range c.streams[cluster] {
		s.cancel()
	}
	return len(c.streams[cluster])
}

// count returns the open streams of cluster of the given kind.
func (c *connections) count(cluster string, kind streamKind) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, s := range c.streams[cluster] {
		if s.kind == kind {
			n++
		}
	}
	return n
}
