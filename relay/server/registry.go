package server

import (
	"context"
	"sync"

	relayv1 "github.com/meshrelay/meshrelay/relay/api/v1"
)

// streamKind is the direction of a long-lived agent stream.
type streamKind string

const (
	pushStream streamKind = "push"
	pullStream streamKind = "pull"
)

// instructionBuffer is how many instructions wait for one pull stream.
// Instructions are rare (a renewal request, a new trust bundle), and one
// that does not fit is dropped for that stream, never blocking the sender.
const instructionBuffer = 4

// connections tracks the open push and pull streams of each cluster: it
// keeps the relay_*_clients_connected gauges equal to them, delivers
// instructions to the pull streams, and drops every stream of a cluster
// whose registration is deleted.
type connections struct {
	metrics *metrics

	mu      sync.Mutex
	next    uint64
	streams map[string]map[uint64]stream
}

type stream struct {
	kind   streamKind
	cancel context.CancelFunc
	// instructions is the pull stream's queue; nil for a push stream.
	instructions chan *relayv1.Instruction
}

func newConnections(m *metrics) *connections {
	return &connections{metrics: m, streams: map[string]map[uint64]stream{}}
}

// open records a stream of cluster; cancel ends it when the cluster is
// dropped. A pull stream gets the channel its instructions arrive on. The
// returned close must be called when the stream ends.
func (c *connections) open(cluster string, kind streamKind, cancel context.CancelFunc) (instructions <-chan *relayv1.Instruction, close func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.next++
	id := c.next
	if c.streams[cluster] == nil {
		c.streams[cluster] = map[uint64]stream{}
	}
	s := stream{kind: kind, cancel: cancel}
	if kind == pullStream {
		s.instructions = make(chan *relayv1.Instruction, instructionBuffer)
	}
	c.streams[cluster][id] = s
	c.metrics.connected(kind, cluster).Inc()
	c.metrics.opened.WithLabelValues(cluster, string(kind)).Inc()
	var once sync.Once
	return s.instructions, func() {
		once.Do(func() {
			c.mu.Lock()
			defer c.mu.Unlock()
			delete(c.streams[cluster], id)
			if len(c.streams[cluster]) == 0 {
				delete(c.streams, cluster)
			}
			c.metrics.connected(kind, cluster).Dec()
		})
	}
}

// send offers in to every pull stream of cluster and returns how many took
// it. A slow agent never blocks the sender: an instruction that does not
// fit a stream's queue is dropped for that stream, and the agent catches
// up when it reconnects (trust bundle first, renewal on its own schedule).
func (c *connections) send(cluster string, in *relayv1.Instruction) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, s := range c.streams[cluster] {
		if s.kind != pullStream {
			continue
		}
		select {
		case s.instructions <- in:
			n++
		default:
		}
	}
	return n
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
