package testenv

import (
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"time"
)

// balancerDialTimeout bounds the dial of one backend: a backend that does
// not answer in time is skipped as a dead one is.
const balancerDialTimeout = time.Second

// Balancer is a TCP load balancer on loopback for local processes: what a
// Service is to the pods behind it in a cluster. Each accepted connection
// goes to the next backend in turn (round robin); a backend that refuses
// the dial is skipped for the next one, so a stopped process behind it is
// left out before anyone removes it. Bytes are copied both ways until
// either side closes, and then both are closed, so that a client sees its
// backend go away at once. A Balancer is safe for concurrent use.
type Balancer struct {
	lis net.Listener
	wg  sync.WaitGroup

	mu       sync.Mutex
	backends []string
	next     int
	closed   bool
	// open holds each proxied connection (the client's side) and the
	// backend it went to.
	open map[net.Conn]string
}

// NewBalancer listens on a free loopback port and spreads the connections
// it accepts over backends (host:port each) until Close.
func NewBalancer(backends ...string) (*Balancer, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("failed to listen for the balancer: %w", err)
	}
	b := &Balancer{lis: lis, backends: slices.Clone(backends), open: map[net.Conn]string{}}
	b.wg.Add(1)
	go b.serve()
	return b, nil
}

// Addr is the address clients dial (host:port).
func (b *Balancer) Addr() string { return b.lis.Addr().String() }

// Add puts addr behind the balancer; adding it twice does nothing.
func (b *Balancer) Add(addr string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !slices.Contains(b.backends, addr) {
		b.backends = append(b.backends, addr)
	}
}

// Remove takes addr out of the turn for new connections. Connections
// already proxied to it stay, as they do when a pod leaves a Service's
// endpoints.
func (b *Balancer) Remove(addr string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if i := slices.Index(b.backends, addr); i >= 0 {
		b.backends = slices.Delete(b.backends, i, i+1)
		if b.next > i {
			b.next--
		}
	}
}

// Backends returns the addresses in the turn, in order.
func (b *Balancer) Backends() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.backends)
}

// Open returns how many proxied connections are open to each backend.
func (b *Balancer) Open() map[string]int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := map[string]int{}
	for _, backend := range b.open {
		n[backend]++
	}
	return n
}

// Close stops accepting, closes every proxied connection and returns once
// every goroutine of the balancer has ended.
func (b *Balancer) Close() error {
	b.mu.Lock()
	b.closed = true
	for c := range b.open {
		c.Close()
	}
	b.mu.Unlock()
	err := b.lis.Close()
	b.wg.Wait()
	return err
}

func (b *Balancer) serve() {
	defer b.wg.Done()
	for {
		c, err := b.lis.Accept()
		if err != nil {
			return // closed
		}
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			b.proxy(c)
		}()
	}
}

// proxy connects client to the next backend that answers and copies bytes
// both ways until one side closes; a client no backend takes is closed.
func (b *Balancer) proxy(client net.Conn) {
	backend, addr, err := b.dialNext()
	if err != nil {
		client.Close()
		return
	}
	if !b.track(client, addr) {
		client.Close()
		backend.Close()
		return
	}
	defer b.untrack(client)
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		done <- struct{}{}
	}
	go pipe(backend, client)
	go pipe(client, backend)
	<-done
	client.Close()
	backend.Close()
	<-done
}

// errNoBackend is why a connection found no backend.
var errNoBackend = errors.New("no backend accepted the connection")

// dialNext dials the backends in turn from the next one. The turn moves
// on as the connection claims it, so that connections accepted together go
// to different backends, and past a backend that answered after others
// failed.
func (b *Balancer) dialNext() (net.Conn, string, error) {
	b.mu.Lock()
	n := len(b.backends)
	order := make([]string, 0, n)
	for i := range n {
		order = append(order, b.backends[(b.next+i)%n])
	}
	if n > 0 {
		b.next = (b.next + 1) % n
	}
	b.mu.Unlock()
	for k, addr := range order {
		c, err := net.DialTimeout("tcp", addr, balancerDialTimeout)
		if err != nil {
			continue
		}
		if k > 0 {
			b.mu.Lock()
			if i := slices.Index(b.backends, addr); i >= 0 {
				b.next = (i + 1) % len(b.backends)
			}
			b.mu.Unlock()
		}
		return c, addr, nil
	}
	return nil, "", errNoBackend
}

// track records client as open to backend, unless the balancer is closed.
func (b *Balancer) track(client net.Conn, backend string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return false
	}
	b.open[client] = backend
	return true
}

func (b *Balancer) untrack(client net.Conn) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.open, client)
}
