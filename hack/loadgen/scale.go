package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/grpc"
	grpccreds "google.golang.org/grpc/credentials"

	"github.com/meshrelay/meshrelay/internal/testenv"
	"github.com/meshrelay/meshrelay/pkg/config"
	relayv1 "github.com/meshrelay/meshrelay/relay/api/v1"
)

type scaleResult struct {
	agents                            int
	elapsed                           time.Duration
	heapBefore, heapAfter             float64
	rssBefore, rssAfter               float64
	goroutinesBefore, goroutinesAfter float64
	stackBefore, stackAfter           float64
}

// measureScale connects n agents, each with its own client certificate and
// connection holding one push and one pull stream, and reads the server's
// memory before and after.
func measureScale(ctx context.Context, e *environment, n, concurrency int) (*scaleResult, error) {
	certs, err := e.issueCerts(n, time.Hour)
	if err != nil {
		return nil, err
	}
	res := &scaleResult{agents: n}
	settle(ctx)
	if err := e.heapProfile(ctx, "heap-before.pprof"); err != nil {
		return nil, err
	}
	res.heapBefore, res.stackBefore, res.rssBefore, res.goroutinesBefore = e.memory()

	conns := make([]*grpc.ClientConn, n)
	start := time.Now()
	err = forEach(ctx, n, concurrency, func(i int) (err error) {
		conns[i], err = connectAgent(ctx, e, &certs[i])
		if err != nil {
			return fmt.Errorf("agent %d: %w", i, err)
		}
		return nil
	})
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	if err != nil {
		return nil, err
	}
	// All streams are open on this side; wait for the server to count them.
	for {
		push := e.sumMetric("relay_push_clients_connected")
		pull := e.sumMetric("relay_pull_clients_connected")
		if int(push) == n && int(pull) == n {
			break
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("server counts %v push and %v pull streams, want %d", push, pull, n)
		case <-time.After(200 * time.Millisecond):
		}
	}
	res.elapsed = time.Since(start)
	settle(ctx)
	if err := e.heapProfile(ctx, "heap-after.pprof"); err != nil {
		return nil, err
	}
	res.heapAfter, res.stackAfter, res.rssAfter, res.goroutinesAfter = e.memory()
	return res, nil
}

// connectAgent opens one agent's connection with its push and pull
// streams, and waits for the trust bundle on pull.
func connectAgent(ctx context.Context, e *environment, cert *tls.Certificate) (*grpc.ClientConn, error) {
	tc := &tls.Config{RootCAs: e.roots, ServerName: config.DefaultAuthority, Certificates: []tls.Certificate{*cert}, MinVersion: tls.VersionTLS12}
	conn, err := grpc.NewClient(e.addr, grpc.WithTransportCredentials(grpccreds.NewTLS(tc)),
		grpc.WithReadBufferSize(4096), grpc.WithWriteBufferSize(4096))
	if err != nil {
		return nil, err
	}
	// A real agent's streams have no deadline (a deadline would cost the
	// server a timer per stream): this context is only cancelled with ctx.
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	context.AfterFunc(ctx, cancel)
	ctx = sctx
	rc := relayv1.NewRelayClient(conn)
	push, err := rc.Push(ctx)
	if err != nil {
		conn.Close()
		return nil, err
	}
	if err := push.Send(&relayv1.PushMessage{Message: &relayv1.PushMessage_Status{Status: &relayv1.AgentStatus{AgentVersion: "loadgen", ClientCertificateNotAfter: cert.Leaf.NotAfter.Unix()}}}); err != nil {
		conn.Close()
		return nil, err
	}
	pull, err := rc.Pull(ctx, &relayv1.PullRequest{})
	if err != nil {
		conn.Close()
		return nil, err
	}
	if _, err := pull.Recv(); err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}

// settle gives the server a moment to finish its work before its memory is
// read.
func settle(ctx context.Context) {
	select {
	case <-ctx.Done():
	case <-time.After(3 * time.Second):
	}
}

// collections is how many garbage collections run before memory is read. A
// collection halves a goroutine stack that uses less than a quarter of it,
// so the stacks that grew during TLS handshakes reach their steady size
// after a few; a running server gets there by the runtime's forced
// collection every two minutes alone.
const collections = 3

// heapProfile fetches the server's heap profile with ?gc=1, which runs the
// garbage collector first (collections times), so that the heap read next is live memory and
// not garbage awaiting collection. The profile is kept in --profile-dir for
// go tool pprof.
func (e *environment) heapProfile(ctx context.Context, name string) error {
	var resp *http.Response
	for range collections {
		if resp != nil {
			resp.Body.Close()
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+e.metrics+"/debug/pprof/heap?gc=1", nil)
		if err != nil {
			return err
		}
		if resp, err = http.DefaultClient.Do(req); err != nil {
			return fmt.Errorf("failed to fetch the server's heap profile: %w", err)
		}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("server's heap profile: %s (is --enable-profiling set?)", resp.Status)
	}
	if err := os.MkdirAll(e.profileDir, 0o755); err != nil {
		return err
	}
	path := filepath.Join(e.profileDir, name)
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	fmt.Printf("server heap profile: %s\n", path)
	return f.Close()
}

// memory reads the server's heap in use, goroutine stacks in use, resident
// memory and goroutines.
func (e *environment) memory() (heap, stack, rss, goroutines float64) {
	url := "http://" + e.metrics + "/metrics"
	return testenv.MetricValue(testenv.ScrapeMetric(url, "go_memstats_heap_inuse_bytes ")),
		testenv.MetricValue(testenv.ScrapeMetric(url, "go_memstats_stack_inuse_bytes ")),
		testenv.MetricValue(testenv.ScrapeMetric(url, "process_resident_memory_bytes ")),
		testenv.MetricValue(testenv.ScrapeMetric(url, "go_goroutines "))
}
