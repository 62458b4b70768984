package server

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/meshrelay/meshrelay/internal/testenv"
	"github.com/meshrelay/meshrelay/pkg/pki"
	relayv1 "github.com/meshrelay/meshrelay/relay/api/v1"
)

// rawH2 is an HTTP/2 client over TLS that writes frames as it likes, as an
// attacker would: headers of any size, calls that never send their
// message, messages announced and never finished. It answers the server's
// settings and pings, and keeps the connection's send window.
type rawH2 struct {
	fr     *http2.Framer
	conn   *tls.Conn
	mu     sync.Mutex
	cond   *sync.Cond
	window int64
	closed bool
	// ended holds the streams the server reset or answered with trailers
	// alone: here, refused.
	ended map[uint32]bool
}

func dialH2(t *testing.T, f *relayFixture, cert *tls.Certificate) *rawH2 {
	t.Helper()
	tc := &tls.Config{RootCAs: f.roots(), ServerName: f.cfg.Authority, NextProtos: []string{"h2"}, MinVersion: tls.VersionTLS12}
	if cert != nil {
		tc.Certificates = []tls.Certificate{*cert}
	}
	c, err := tls.Dial("tcp", f.addr, tc)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	r := &rawH2{conn: c, fr: http2.NewFramer(c, c), window: 65535, ended: map[uint32]bool{}}
	r.cond = sync.NewCond(&r.mu)
	if _, err := c.Write([]byte(http2.ClientPreface)); err != nil {
		// The server may close a connection right after its handshake
		// (beyond the bound on connections): it is closed.
		r.closed = true
		return r
	}
	if err := r.fr.WriteSettings(); err != nil {
		r.closed = true
		return r
	}
	go r.read()
	return r
}

func (r *rawH2) read() {
	for {
		f, err := r.fr.ReadFrame()
		r.mu.Lock()
		if err != nil {
			r.closed = true
			r.cond.Broadcast()
			r.mu.Unlock()
			return
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				_ = r.fr.WriteSettingsAck()
			}
		case *http2.WindowUpdateFrame:
			if f.StreamID == 0 {
				r.window += int64(f.Increment)
				r.cond.Broadcast()
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				_ = r.fr.WritePing(true, f.Data)
			}
		case *http2.RSTStreamFrame:
			r.ended[f.StreamID] = true
		case *http2.HeadersFrame:
			if f.StreamEnded() {
				r.ended[f.StreamID] = true
			}
		}
		r.mu.Unlock()
	}
}

func (r *rawH2) isClosed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.closed
}

func (r *rawH2) refused() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.ended)
}

// headers opens stream id to method, with n extra headers of size bytes
// each.
func (r *rawH2) headers(id uint32, method string, n, size int) error {
	var buf bytes.Buffer
	enc := hpack.NewEncoder(&buf)
	for _, kv := range [][2]string{{":method", "POST"}, {":scheme", "https"}, {":path", method}, {":authority", "relay"}, {"content-type", "application/grpc"}, {"te", "trailers"}} {
		_ = enc.WriteField(hpack.HeaderField{Name: kv[0], Value: kv[1]})
	}
	val := strings.Repeat("a", size)
	for i := range n {
		_ = enc.WriteField(hpack.HeaderField{Name: fmt.Sprintf("x-pad-%d", i), Value: val, Sensitive: true})
	}
	b := buf.Bytes()
	r.mu.Lock()
	defer r.mu.Unlock()
	first := min(len(b), 16384)
	if err := r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: b[:first], EndHeaders: first == len(b)}); err != nil {
		return err
	}
	for b = b[first:]; len(b) > 0; {
		n := min(len(b), 16384)
		if err := r.fr.WriteContinuation(id, n == len(b), b[:n]); err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

// data sends b on stream id within the connection's window.
func (r *rawH2) data(id uint32, b []byte) error {
	for len(b) > 0 {
		n := min(len(b), 16384)
		r.mu.Lock()
		for r.window < int64(n) && !r.closed {
			r.cond.Wait()
		}
		if r.closed {
			r.mu.Unlock()
			return nil
		}
		r.window -= int64(n)
		err := r.fr.WriteData(id, false, b[:n])
		r.mu.Unlock()
		if err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

// heldBytes is what this process holds in heap and stacks after two
// collections; the relay server runs in it.
func heldBytes() int64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapInuse + m.StackInuse)
}

const (
	bootstrapMethod = relayv1.Relay_Bootstrap_FullMethodName
	renewMethod     = relayv1.Relay_Renew_FullMethodName
)

// TestCallsWithoutACertificateAreBounded attacks relay-server from
// connections without a client certificate, before any token or rate
// check of ours runs: huge headers, more Bootstrap calls than it admits at
// once, each holding its message unfinished, and more connections than it
// admits. What it holds stays bounded (before these bounds, 20 calls with
// 15 MiB of headers each held 301 MiB, and 4 connections of 1,000 calls
// with unfinished messages 296 MiB and 4,012 goroutines), the calls end at
// their deadline, and a real bootstrap still works.
func TestCallsWithoutACertificateAreBounded(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Names: []string{"mgmt"}})
	f := startRelay(t, env.Clusters[0], "gloo-mesh", nil)
	limits := f.srv.svc.calls
	limits.anonymousCallTimeout.Store(int64(3 * time.Second))
	maxCalls := limits.maxAnonymousCalls.Load()

	t.Run("headers beyond the bound are refused, not kept", func(t *testing.T) {
		before := heldBytes()
		r := dialH2(t, f, nil)
		const streams = 8
		for s := range streams {
			// 8 headers of 1 MiB: gRPC's default bound is 16 MiB. The
			// server may close the connection instead of refusing the
			// streams one by one.
			if err := r.headers(uint32(2*s+1), bootstrapMethod, 8, 1<<20); err != nil {
				testenv.Eventually(t, "the connection that failed a write is closed", 10*time.Second, func() error {
					if !r.isClosed() {
						return fmt.Errorf("write failed (%v), but the connection is open", err)
					}
					return nil
				})
				break
			}
		}
		testenv.Eventually(t, "every stream is refused", 30*time.Second, func() error {
			if n := r.refused(); n < streams && !r.isClosed() {
				return fmt.Errorf("%d of %d streams refused", n, streams)
			}
			return nil
		})
		grew := heldBytes() - before
		t.Logf("%d streams with 8 MiB of headers each: the process holds %d KiB more", streams, grew>>10)
		if grew > 16<<20 {
			t.Errorf("%d streams with 8 MiB of headers each: the process holds %d MiB more, want under 16", streams, grew>>20)
		}
		if anon, _ := limits.inFlight(""); anon != 0 {
			t.Errorf("%d calls counted in flight after their headers were refused", anon)
		}
	})

	t.Run("calls beyond the bound are refused before their message, and those admitted end at their deadline", func(t *testing.T) {
		before, goroutines := heldBytes(), runtime.NumGoroutine()
		const conns, perConn = 4, 300
		payload := make([]byte, 5+maxMessageBytes-1)
		binary.BigEndian.PutUint32(payload[1:5], maxMessageBytes) // a message of maxMessageBytes, one byte short
		var wg sync.WaitGroup
		var raws []*rawH2
		for range conns {
			r := dialH2(t, f, nil)
			raws = append(raws, r)
			wg.Go(func() {
				for s := range perConn {
					id := uint32(2*s + 1)
					if err := r.headers(id, bootstrapMethod, 0, 0); err != nil {
						t.Error(err)
						return
					}
					if err := r.data(id, payload); err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		testenv.Eventually(t, "the calls beyond the bound are refused", 30*time.Second, func() error {
			refused := 0
			for _, r := range raws {
				refused += r.refused()
			}
			if anon, _ := limits.inFlight(""); refused < conns*perConn-int(maxCalls) || anon > maxCalls {
				return fmt.Errorf("%d of %d calls refused, %d in flight (bound %d)", refused, conns*perConn, anon, maxCalls)
			}
			return nil
		})
		grew, moreGoroutines := heldBytes()-before, runtime.NumGoroutine()-goroutines
		t.Logf("%d calls holding unfinished messages of 64 KiB: the process holds %d KiB and %d goroutines more", conns*perConn, grew>>10, moreGoroutines)
		if grew > 48<<20 {
			t.Errorf("%d calls holding unfinished messages of 64 KiB: the process holds %d MiB more, want under 48 (at most %d calls admitted)", conns*perConn, grew>>20, maxCalls)
		}
		if m := f.metric(`relay_stream_limits_exceeded_total{limit="anonymous_calls"}`); testenv.MetricValue(m) < 1 {
			t.Errorf("%q: the refusals are not counted", m)
		}
		if moreGoroutines > int(maxCalls)+conns*8 {
			t.Errorf("%d goroutines more, want at most the %d calls admitted and a few per connection", moreGoroutines, maxCalls)
		}
		testenv.Eventually(t, "the admitted calls end at their deadline", 30*time.Second, func() error {
			if anon, _ := limits.inFlight(""); anon != 0 {
				return fmt.Errorf("%d calls without a certificate still in flight", anon)
			}
			return nil
		})
	})

	t.Run("connections beyond the bound are closed after the handshake, the others after their lifetime", func(t *testing.T) {
		const admitted = 8
		limits.maxAnonymousConns.Store(admitted)
		limits.anonymousConnLifetime.Store(int64(3 * time.Second))
		defer limits.maxAnonymousConns.Store(defaultMaxAnonymousConns)
		defer limits.anonymousConnLifetime.Store(int64(defaultAnonymousConnLifetime))
		testenv.Eventually(t, "the earlier subtests' connections are gone", 30*time.Second, func() error {
			if n := limits.anonymousConns.Load(); n != 0 {
				return fmt.Errorf("%d connections without a certificate open", n)
			}
			return nil
		})
		var raws []*rawH2
		for range admitted {
			raws = append(raws, dialH2(t, f, nil))
		}
		testenv.Eventually(t, "the admitted connections are counted", 10*time.Second, func() error {
			if n := limits.anonymousConns.Load(); n != admitted {
				return fmt.Errorf("%d connections counted, want %d", n, admitted)
			}
			return nil
		})
		extra := dialH2(t, f, nil)
		testenv.Eventually(t, "the connection beyond the bound is closed", 10*time.Second, func() error {
			if !extra.isClosed() {
				return fmt.Errorf("still open")
			}
			return nil
		})
		for i, r := range raws {
			if r.isClosed() {
				t.Fatalf("admitted connection %d was closed before its lifetime", i)
			}
		}
		if m := f.metric(`relay_stream_limits_exceeded_total{limit="anonymous_connections"}`); testenv.MetricValue(m) != 1 {
			t.Errorf("%q, want the one connection closed counted", m)
		}
		testenv.Eventually(t, "the admitted connections are closed after their lifetime", 30*time.Second, func() error {
			for i, r := range raws {
				if !r.isClosed() {
					return fmt.Errorf("connection %d still open", i)
				}
			}
			if n := limits.anonymousConns.Load(); n != 0 {
				return fmt.Errorf("%d connections still counted", n)
			}
			return nil
		})
	})

	t.Run("a bootstrap works after all this", func(t *testing.T) {
		f.register("cluster-1")
		f.bootstrap(f.dial(nil), "cluster-1", f.token())
	})
}

// TestOneClustersCallsAreBounded holds a cluster's client certificate and
// opens Renew calls that never finish their message, over several
// connections: past the cluster's bound they are refused before gRPC
// reads a byte of their message, and another cluster's renewal still
// works.
func TestOneClustersCallsAreBounded(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Names: []string{"mgmt"}})
	f := startRelay(t, env.Clusters[0], "gloo-mesh", nil)
	limits := f.srv.svc.calls
	bound := limits.maxClusterCalls.Load()
	if want := int64(f.cfg.MaxStreamsPerCluster + clusterCallsBeyondStreams); bound != want {
		t.Fatalf("one cluster may have %d calls in flight, want %d", bound, want)
	}
	f.register("attacker")
	f.register("bystander")
	attacker, _ := f.bootstrap(f.dial(nil), "attacker", f.token())
	bystander, _ := f.bootstrap(f.dial(nil), "bystander", f.token())

	const conns, perConn = 4, 100
	header := make([]byte, 5)
	binary.BigEndian.PutUint32(header[1:5], maxMessageBytes)
	var raws []*rawH2
	for range conns {
		r := dialH2(t, f, attacker)
		raws = append(raws, r)
		for s := range perConn {
			id := uint32(2*s + 1)
			if err := r.headers(id, renewMethod, 0, 0); err != nil {
				t.Fatal(err)
			}
			if err := r.data(id, header); err != nil {
				t.Fatal(err)
			}
		}
	}
	testenv.Eventually(t, "the attacker's calls beyond the bound are refused", 30*time.Second, func() error {
		refused := 0
		for _, r := range raws {
			refused += r.refused()
		}
		if _, n := limits.inFlight("attacker"); n != bound || refused != conns*perConn-int(bound) {
			return fmt.Errorf("%d in flight, %d of %d refused; want %d in flight", n, refused, conns*perConn, bound)
		}
		return nil
	})
	if m, want := f.metric(`relay_stream_limits_exceeded_total{limit="cluster_calls"}`), float64(conns*perConn-int(bound)); testenv.MetricValue(m) != want {
		t.Errorf("%q, want %v refusals counted", m, want)
	}
	key, _ := pki.GenerateKey(pki.ECDSAP256)
	csr, _ := pki.NewCSR(key, "bystander")
	if _, err := f.dial(bystander).Renew(t.Context(), &relayv1.RenewRequest{Csr: csr}); err != nil {
		t.Errorf("another cluster's renewal: %v", err)
	}
	for _, r := range raws {
		r.conn.Close()
	}
	testenv.Eventually(t, "the attacker's calls are no longer counted once its connections close", 30*time.Second, func() error {
		if _, n := limits.inFlight("attacker"); n != 0 {
			return fmt.Errorf("%d in flight", n)
		}
		return nil
	})
}
