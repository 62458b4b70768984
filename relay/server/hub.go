package server

import (
	"sync"

	relayv1 "github.com/meshrelay/meshrelay/relay/api/v1"
)

// hub delivers instructions to the pull streams of a cluster. A slow or
// absent agent never blocks the sender: an instruction that does not fit a
// stream's buffer is dropped for that stream, and the agent catches up when
// it reconnects (it receives the trust bundle again and renews by its own
// schedule).
type hub struct {
	mu   sync.Mutex
	next uint64
	subs map[string]map[uint64]chan *relayv1.Instruction
}

// hubBuffer is how many instructions wait for one stream.
const hubBuffer = 16

func newHub() *hub { return &hub{subs: map[string]map[uint64]chan *relayv1.Instruction{}} }

// subscribe returns the channel of cluster's instructions for one stream and
// the function that ends the subscription.
func (h *hub) subscribe(cluster string) (<-chan *relayv1.Instruction, func()) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.next++
	id := h.next
	ch := make(chan *relayv1.Instruction, hubBuffer)
	if h.subs[cluster] == nil {
		h.subs[cluster] = map[uint64]chan *relayv1.Instruction{}
	}
	h.subs[cluster][id] = ch
	return ch, func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		delete(h.subs[cluster], id)
		if len(h.subs[cluster]) == 0 {
			delete(h.subs, cluster)
		}
	}
}

// send offers in to every pull stream of cluster and returns how many took it.
func (h *hub) send(cluster string, in *relayv1.Instruction) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, ch := range h.subs[cluster] {
		select {
		case ch <- in:
			n++
		default:
		}
	}
	return n
}
