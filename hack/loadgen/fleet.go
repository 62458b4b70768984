package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	grpccreds "google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/meshrelay/meshrelay/internal/backoff"
	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/relay/agent"
	relayv1 "github.com/meshrelay/meshrelay/relay/api/v1"
)

// As relay-agent's session (session.go): a new connection's Connect stream
// must bring its first message within firstMessageWait, and a handover
// that failed is tried again after handoverRetry.
const (
	firstMessageWait = 30 * time.Second
	handoverRetry    = 10 * time.Second
)

// fleet is simulated agents, each with its own client certificate and
// connection holding one Connect stream, kept open as relay-agent keeps
// it (streams.go, session.go): a session that ends is dialed again after
// the agent's own backoff (agent.RedialInitial doubling to
// agent.RedialLimit, with internal/backoff's jitter, started again after a
// session of over agent.StableSession), and a renewed certificate moves
// the stream to a new connection before the old one closes.
type fleet struct {
	// targets are the addresses the agents dial: agent i dials
	// targets[i % len(targets)].
	targets []string
	roots   *x509.CertPool
	agents  []*simAgent

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	// refused counts connections the server refused with Unauthenticated
	// or PermissionDenied, which no redial would mend.
	refused atomic.Int64
	// renewCalls counts the Renew calls the agents made; they make no
	// Bootstrap call.
	renewCalls atomic.Int64

	// errs counts the errors connections failed with, and ends the
	// errors streams ended with, by message.
	mu         sync.Mutex
	errs, ends map[string]int
}

// endedWith counts the streams of an agent that ended with err.
func (f *fleet) endedWith(a *simAgent, err error) {
	msg := addrPattern.ReplaceAllString(strings.ReplaceAll(fmt.Sprint(err), agentName(a.i), "<cluster>"), "<addr>")
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ends == nil {
		f.ends = map[string]int{}
	}
	f.ends[msg]++
}

// failedWith counts a connection of agent a that failed with err.
func (f *fleet) failedWith(a *simAgent, err error) {
	a.failed.Add(1)
	if refusedCode(err) {
		f.refused.Add(1)
	}
	msg := strings.ReplaceAll(err.Error(), agentName(a.i), "<cluster>")
	// Addresses and ports differ from one connection to the next.
	msg = addrPattern.ReplaceAllString(msg, "<addr>")
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.errs == nil {
		f.errs = map[string]int{}
	}
	f.errs[msg]++
}

var addrPattern = regexp.MustCompile(`\d+\.\d+\.\d+\.\d+:\d+`)

// forgetErrors forgets the errors counted so far.
func (f *fleet) forgetErrors() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.errs, f.ends = nil, nil
}

// printErrors prints the errors streams ended with and connections failed
// with, the most frequent first, and forgets them.
func (f *fleet) printErrors() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range []struct {
		what string
		errs map[string]int
	}{{"streams ended", f.ends}, {"connections failed", f.errs}} {
		if len(c.errs) == 0 {
			continue
		}
		fmt.Printf("  %s with:\n", c.what)
		msgs := slices.Collect(maps.Keys(c.errs))
		slices.SortFunc(msgs, func(a, b string) int { return c.errs[b] - c.errs[a] })
		for i, m := range msgs {
			if i == 5 {
				fmt.Printf("    ... and %d other errors\n", len(msgs)-5)
				break
			}
			fmt.Printf("    %6d  %s\n", c.errs[m], m)
		}
	}
	f.errs, f.ends = nil, nil
}

// simAgent is one simulated agent.
type simAgent struct {
	i    int
	cert atomic.Pointer[tls.Certificate]
	// renewed carries a renewed certificate to the session, which moves
	// the streams to a connection made with it.
	renewed chan struct{}

	connected atomic.Bool
	// dropped and back are when the streams last ended and last opened
	// (Unix nanoseconds); drops counts the ends.
	dropped, back atomic.Int64
	drops         atomic.Int32
	// failed counts the connections that did not open; longestWait is the
	// longest backoff drawn (nanoseconds); handovers counts moves to a
	// renewed certificate's connection.
	failed      atomic.Int32
	longestWait atomic.Int64
	handovers   atomic.Int32
}

// simLink is one connection's Connect stream.
type simLink struct {
	conn   *grpc.ClientConn
	cancel context.CancelFunc
	// errc receives the stream's end.
	errc chan error
}

func (l *simLink) close() {
	l.cancel()
	l.conn.Close()
}

// connectFleet starts an agent for each of certs against the main
// relay-server and waits, at most five minutes, until the server counts
// all their streams (a Connect stream as one push and one pull stream).
// The caller stops the fleet.
func (e *environment) connectFleet(ctx context.Context, certs []tls.Certificate, concurrency int) (*fleet, error) {
	f := newFleet(ctx, []string{e.addr}, e.roots, certs)
	if err := f.start(ctx, concurrency); err != nil {
		f.stop()
		return nil, err
	}
	if _, _, err := awaitStreams(ctx, len(certs), time.Now().Add(5*time.Minute), e.metrics); err != nil {
		f.printErrors()
		f.stop()
		return nil, err
	}
	return f, nil
}

// newFleet returns agents agent-0 … agent-(n-1) with the certificates
// certs, dialing targets; start connects them.
func newFleet(ctx context.Context, targets []string, roots *x509.CertPool, certs []tls.Certificate) *fleet {
	f := &fleet{targets: targets, roots: roots, agents: make([]*simAgent, len(certs))}
	// The agents outlive the context of a phase's setup only through
	// stop.
	f.ctx, f.cancel = context.WithCancel(context.WithoutCancel(ctx))
	context.AfterFunc(ctx, f.cancel)
	for i := range certs {
		a := &simAgent{i: i, renewed: make(chan struct{}, 1)}
		a.cert.Store(&certs[i])
		f.agents[i] = a
	}
	return f
}

// start opens every agent's streams, concurrency at a time (the fleet as
// it runs before the storm, not a measurement), and then keeps them open;
// an agent whose first connection fails dials again as it would after any
// other.
func (f *fleet) start(ctx context.Context, concurrency int) error {
	return forEach(ctx, len(f.agents), concurrency, func(i int) error {
		a := f.agents[i]
		l, err := f.open(a, a.cert.Load())
		if err != nil {
			f.failedWith(a, err)
			f.wg.Go(func() { f.redialFirst(a) })
			return nil
		}
		f.wg.Go(func() { f.keep(a, l) })
		return nil
	})
}

// redialFirst is keep for an agent whose first connection failed: it
// waits the first delay before dialing.
func (f *fleet) redialFirst(a *simAgent) {
	select {
	case <-f.ctx.Done():
		return
	case <-time.After(backoff.New(agent.RedialInitial, agent.RedialLimit, rand.Float64).Step()):
	}
	f.keep(a, nil)
}

// failures returns how many connections failed to open so far.
func (f *fleet) failures() int {
	n := 0
	for _, a := range f.agents {
		n += int(a.failed.Load())
	}
	return n
}

// stop closes every agent's connection and waits for them.
func (f *fleet) stop() {
	f.cancel()
	f.wg.Wait()
}

// keep runs a's sessions until the fleet stops, waiting between them as
// relay-agent's redial does.
func (f *fleet) keep(a *simAgent, first *simLink) {
	retry := backoff.New(agent.RedialInitial, agent.RedialLimit, rand.Float64)
	l := first
	for {
		start := time.Now()
		f.session(a, l)
		l = nil
		if f.ctx.Err() != nil {
			return
		}
		if time.Since(start) > agent.StableSession {
			retry.Reset()
		}
		d := retry.Step()
		if int64(d) > a.longestWait.Load() {
			a.longestWait.Store(int64(d))
		}
		select {
		case <-f.ctx.Done():
			return
		case <-time.After(d):
		}
	}
}

// session opens a's streams unless l holds them already, and keeps them
// until they end, moving them to a new connection when a's certificate is
// renewed.
func (f *fleet) session(a *simAgent, l *simLink) {
	if l == nil {
		var err error
		if l, err = f.open(a, a.cert.Load()); err != nil {
			f.failedWith(a, err)
			return
		}
	}
	a.back.Store(time.Now().UnixNano())
	a.connected.Store(true)
	var retry <-chan time.Time
	for {
		select {
		case <-f.ctx.Done():
			l.close()
			return
		case err := <-l.errc:
			f.endedWith(a, err)
			a.connected.Store(false)
			a.dropped.Store(time.Now().UnixNano())
			a.drops.Add(1)
			l.close()
			return
		case <-a.renewed:
		case <-retry:
		}
		next, err := f.open(a, a.cert.Load())
		if err != nil {
			retry = time.After(handoverRetry)
			continue
		}
		l.close()
		l, retry = next, nil
		a.handovers.Add(1)
	}
}

// open dials the target with cert, opens the Connect stream, sends the
// status and waits for the stream's first message, as relay-agent's open
// does with a server that serves Connect.
func (f *fleet) open(a *simAgent, cert *tls.Certificate) (*simLink, error) {
	tc := &tls.Config{RootCAs: f.roots, ServerName: config.DefaultAuthority, Certificates: []tls.Certificate{*cert}, MinVersion: tls.VersionTLS12}
	conn, err := grpc.NewClient(f.targetOf(a), grpc.WithTransportCredentials(grpccreds.NewTLS(tc)),
		grpc.WithReadBufferSize(4096), grpc.WithWriteBufferSize(4096))
	if err != nil {
		return nil, err
	}
	// A real agent's streams have no deadline (a deadline would cost the
	// server a timer per stream).
	lctx, cancel := context.WithCancel(f.ctx)
	l := &simLink{conn: conn, cancel: cancel, errc: make(chan error, 1)}
	fail := func(err error) (*simLink, error) {
		l.close()
		return nil, err
	}
	st := &relayv1.AgentStatus{AgentVersion: "loadgen", ClientCertificateNotAfter: cert.Leaf.NotAfter.Unix(), Replica: agentName(a.i)}
	recv, err := openStreams(lctx, conn, connectShape, st)
	if err != nil {
		return fail(err)
	}
	quiet := time.AfterFunc(firstMessageWait, cancel)
	_, err = recv()
	if !quiet.Stop() && err == nil {
		err = fmt.Errorf("no first message within %s", firstMessageWait)
	}
	if err != nil {
		return fail(err)
	}
	go func() {
		for {
			if _, err := recv(); err != nil {
				l.errc <- err
				return
			}
		}
	}()
	return l, nil
}

// targetOf is the address a dials.
func (f *fleet) targetOf(a *simAgent) string { return f.targets[a.i%len(f.targets)] }

// refusedCode reports whether err is the server refusing the agent
// (Unauthenticated or PermissionDenied): a redial does not help.
func refusedCode(err error) bool {
	var st interface{ GRPCStatus() *status.Status }
	if !errors.As(err, &st) {
		return false
	}
	c := st.GRPCStatus().Code()
	return c == codes.Unauthenticated || c == codes.PermissionDenied
}
