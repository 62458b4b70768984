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
	shape                             streamShape
	agents                            int
	elapsed                           time.Duration
	heapBefore, heapAfter             float64
	rssBefore, rssAfter               float64
	goroutinesBefore, goroutinesAfter float64
	stackBefore, stackAfter           float64
}

// measureScale starts relay-server again, so that each shape is measured
// on a process of its own (Go keeps the memory it freed for a while, and
// the next shape on the same process would reuse it), connects an agent
// for each of certs, each with its own connection holding its streams in
// shape, and reads the server's memory before and after. The agents'
// connections close when it returns.
//
// The server is not waited for until it is quiet: with 10,000 clusters
// registered, it writes their status for minutes after it starts, at its
// status client's rate (the same for either shape).
func measureScale(ctx context.Context, e *environment, certs []tls.Certificate, shape streamShape, concurrency int) (*scaleResult, error) {
	n := len(certs)
	if err := e.restartServer(ctx, nil); err != nil {
		return nil, fmt.Errorf("failed to restart relay-server: %w", err)
	}
	res := &scaleResult{shape: shape, agents: n}
	settle(ctx)
	if err := e.heapProfile(ctx, fmt.Sprintf("heap-before-%s.pprof", shape)); err != nil {
		return nil, err
	}
	res.heapBefore, res.stackBefore, res.rssBefore, res.goroutinesBefore = e.memory()

	conns := make([]*grpc.ClientConn, n)
	start := time.Now()
	err := forEach(ctx, n, concurrency, func(i int) (err error) {
		conns[i], err = connectAgent(ctx, e, &certs[i], shape)
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
	all, _, err := awaitStreams(ctx, n, time.Now().Add(5*time.Minute), e.metrics)
	if err != nil {
		return nil, err
	}
	res.elapsed = all.Sub(start)
	settle(ctx)
	if err := e.heapProfile(ctx, fmt.Sprintf("heap-after-%s.pprof", shape)); err != nil {
		return nil, err
	}
	res.heapAfter, res.stackAfter, res.rssAfter, res.goroutinesAfter = e.memory()
	return res, nil
}

// rssPerAgent is the server's resident memory per agent, in KiB.
func (r *scaleResult) rssPerAgent() float64 { return r.perAgent(r.rssBefore, r.rssAfter) }

// perAgent is the growth from before to after per agent, in KiB.
func (r *scaleResult) perAgent(before, after float64) float64 {
	return (after - before) / float64(r.agents) / 1024
}

func (r *scaleResult) print() {
	fmt.Printf("\nscale, %s: %d agents connected (%s) to a relay-server started for them, in %s\n",
		r.shape, r.agents, r.shape.describe(), r.elapsed.Round(time.Millisecond))
	fmt.Printf("  server resident memory: %.1f MiB before, %.1f MiB after: %.1f KiB per agent (goal <= 40 KiB)\n",
		r.rssBefore/(1<<20), r.rssAfter/(1<<20), r.rssPerAgent())
	fmt.Printf("  of which heap in use: %.1f MiB before, %.1f MiB after: %.1f KiB per agent\n",
		r.heapBefore/(1<<20), r.heapAfter/(1<<20), r.perAgent(r.heapBefore, r.heapAfter))
	fmt.Printf("  and goroutine stacks: %.1f MiB before, %.1f MiB after: %.1f KiB per agent\n",
		r.stackBefore/(1<<20), r.stackAfter/(1<<20), r.perAgent(r.stackBefore, r.stackAfter))
	fmt.Printf("  server goroutines: %.0f before, %.0f after: %.1f per agent\n", r.goroutinesBefore, r.goroutinesAfter,
		(r.goroutinesAfter-r.goroutinesBefore)/float64(r.agents))
}

// printShapeRatio prints the resident memory per agent of one Connect
// stream against that of a push and a pull stream, when both were
// measured.
func printShapeRatio(results []*scaleResult) {
	var connect, pushPull *scaleResult
	for _, r := range results {
		switch r.shape {
		case connectShape:
			connect = r
		case pushPullShape:
			pushPull = r
		}
	}
	if connect == nil || pushPull == nil {
		return
	}
	fmt.Printf("\nscale: resident memory per agent, %s / %s: %.1f / %.1f KiB = %.2f\n",
		connectShape, pushPullShape, connect.rssPerAgent(), pushPull.rssPerAgent(), connect.rssPerAgent()/pushPull.rssPerAgent())
}

// connectAgent opens one agent's connection with its streams in shape, and
// waits for the trust bundle, the server's first instruction.
func connectAgent(ctx context.Context, e *environment, cert *tls.Certificate, shape streamShape) (*grpc.ClientConn, error) {
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
	st := &relayv1.AgentStatus{AgentVersion: "loadgen", ClientCertificateNotAfter: cert.Leaf.NotAfter.Unix()}
	recv, err := openStreams(sctx, conn, shape, st)
	if err == nil {
		_, err = recv()
	}
	if err != nil {
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
