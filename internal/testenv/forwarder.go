package testenv

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// Forwarder is a TCP front for local processes that stand for the replicas
// behind a Service: each connection goes to one of the addresses Backends
// returns at that moment, in turn, the next one when a dial fails, the way
// a Service sends only to the ready pods its endpoints hold. Bytes pass
// through untouched, so TLS is end to end.
type Forwarder struct {
	// Addr is where the forwarder listens (host:port).
	Addr string

	l        net.Listener
	backends func() []string
	wg       sync.WaitGroup

	mu     sync.Mutex
	next   int
	served map[string]int
	conns  map[net.Conn]struct{}
	closed bool
}

// StartForwarder listens on addr and forwards every connection to one of
// backends(); a connection no backend accepts is closed.
func StartForwarder(addr string, backends func() []string) (*Forwarder, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("failed to listen for the forwarder on %s: %w", addr, err)
	}
	f := &Forwarder{Addr: l.Addr().String(), l: l, backends: backends, served: map[string]int{}, conns: map[net.Conn]struct{}{}}
	f.wg.Go(f.accept)
	return f, nil
}

// Served returns how many connections went to each backend so far.
func (f *Forwarder) Served() map[string]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[string]int, len(f.served))
	for k, v := range f.served {
		out[k] = v
	}
	return out
}

// Close stops listening, closes every open connection and waits for the
// forwarder's goroutines to end.
func (f *Forwarder) Close() error {
	f.mu.Lock()
	f.closed = true
	for c := range f.conns {
		_ = c.Close()
	}
	f.mu.Unlock()
	err := f.l.Close()
	f.wg.Wait()
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

func (f *Forwarder) accept() {
	for {
		in, err := f.l.Accept()
		if err != nil {
			return
		}
		if !f.track(in) {
			return
		}
		f.wg.Go(func() { f.forward(in) })
	}
}

// track records c as open, or closes it and says no once Close began.
func (f *Forwarder) track(c net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		_ = c.Close()
		return false
	}
	f.conns[c] = struct{}{}
	return true
}

func (f *Forwarder) untrack(c net.Conn) {
	f.mu.Lock()
	delete(f.conns, c)
	f.mu.Unlock()
	_ = c.Close()
}

func (f *Forwarder) forward(in net.Conn) {
	defer f.untrack(in)
	out := f.dial()
	if out == nil {
		return
	}
	if !f.track(out) {
		return
	}
	defer f.untrack(out)
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		// Half-close so the other side sees the end of this direction.
		if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		done <- struct{}{}
	}
	go pipe(out, in)
	go pipe(in, out)
	<-done
	<-done
}

// dial connects to the next backend that accepts, starting after the one
// used last, and counts it; nil when none does.
func (f *Forwarder) dial() net.Conn {
	backends := f.backends()
	f.mu.Lock()
	start := f.next
	f.next++
	f.mu.Unlock()
	for i := range backends {
		addr := backends[(start+i)%len(backends)]
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			continue
		}
		f.mu.Lock()
		f.served[addr]++
		f.mu.Unlock()
		return c
	}
	return nil
}
