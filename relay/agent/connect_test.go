package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/utils/clock"

	"github.com/meshrelay/meshrelay/internal/testenv"
	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/pkg/pki"
	"github.com/meshrelay/meshrelay/pkg/relaysecret"
	relayv1 "github.com/meshrelay/meshrelay/relay/api/v1"
)

// streamsRig is the agent's streams, with a client certificate from the
// relay's signing CA, against a trustRelay of one shape on loopback.
type streamsRig struct {
	ca       *relayCA
	relay    *trustRelay
	s        *streams
	metrics  *agentMetrics
	renewNow chan string
	lines    func() []logLine
}

func newStreamsRig(t *testing.T, shape string) *streamsRig {
	t.Helper()
	ca := newRelayCA(t, "relay", time.Now())
	relay := startTrustRelay(t, serverOf(t, ca.signing), pki.EncodeCertificates(ca.root.Cert), shape)
	p := NewProvider()
	p.Set(issuedClientCertificate(t, ca))
	roots := &rootSet{}
	roots.setLocal([]*x509.Certificate{ca.root.Cert})
	cfg := config.DefaultAgent()
	cfg.Cluster, cfg.Namespace, cfg.ServerAddress = "cluster-1", ns, relay.addr
	log, lines := newRecordingLog()
	r := &streamsRig{ca: ca, relay: relay, metrics: newAgentMetrics(), renewNow: make(chan string, 1), lines: lines}
	r.s = newStreams(streamsOptions{Config: &cfg, Replica: "agent-0", Provider: p, Roots: roots, RenewNow: r.renewNow, Updates: r.metrics.bundleUpdates,
		Connected: r.metrics.connected, Reconnects: r.metrics.reconnects, Handovers: r.metrics.handovers, Clock: clock.RealClock{}, Random: fixed(0), Log: log})
	return r
}

// issuedClientCertificate is a client certificate for cluster-1 as relay-server
// issues it from ca's signing CA.
func issuedClientCertificate(t *testing.T, ca *relayCA) *tls.Certificate {
	t.Helper()
	issued, key := signBoundWithKey(t, ca.signing, "0b5e8d1c-7a2f-4c3e-9d6b-1f2a3b4c5d6e", time.Now(), time.Hour)
	keyPEM, err := pki.EncodePrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	m, errs := relaysecret.Decode(relaysecret.Client, map[string][]byte{relaysecret.KeyTLSCert: issued.CertPEM, relaysecret.KeyTLSKey: keyPEM, relaysecret.KeyCACert: pki.EncodeCertificates(ca.root.Cert)}, "")
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	return m.TLSCertificate()
}

func (r *streamsRig) eventually(t *testing.T, what string, check func() error) {
	t.Helper()
	testenv.Eventually(t, what, 20*time.Second, check)
}

// statusOn waits until agent-0's status arrives on a stream of method.
func (r *streamsRig) statusOn(t *testing.T, method string) {
	t.Helper()
	r.eventually(t, "the status arrives on "+method, func() error {
		if got := r.relay.statusOn("agent-0"); got != method {
			return fmt.Errorf("the last status came on %q", got)
		}
		return nil
	})
}

// renewNowReaches sends a renewal request on the server's open streams and
// waits until the rotator gets it.
func (r *streamsRig) renewNowReaches(t *testing.T, reason string) {
	t.Helper()
	r.relay.push(&relayv1.Instruction{Instruction: &relayv1.Instruction_RenewNow{RenewNow: &relayv1.RenewNow{Reason: reason}}})
	select {
	case got := <-r.renewNow:
		if got != reason {
			t.Errorf("renewal requested for %q, want %q", got, reason)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("the renewal request %q did not reach the rotator", reason)
	}
}

// logged returns the lines whose message holds msg.
func (r *streamsRig) logged(msg string) []logLine {
	var out []logLine
	for _, l := range r.lines() {
		if strings.Contains(l.msg, msg) {
			out = append(out, l)
		}
	}
	return out
}

const fallbackMessage = "does not serve Connect"

func TestStreamsOpenConnectOrFallBackToPushAndPull(t *testing.T) {
	for _, tc := range []struct {
		name  string
		shape string
		// wantCalls are the calls the server receives, by method;
		// statusOn is the stream the status comes on.
		wantCalls map[string]int
		statusOn  string
		// wantFallbackLines is how many info lines say the server does not
		// serve Connect.
		wantFallbackLines int
	}{
		{name: "against a server that serves Connect the agent opens one Connect stream and neither Push nor Pull",
			shape: shapeConnect, wantCalls: map[string]int{"Connect": 1}, statusOn: "Connect"},
		{name: "against a server that predates Connect the agent asks for it once, says so at info level, and works over Push and Pull on the same connection",
			shape: shapePushPull, wantCalls: map[string]int{"Connect": 1, "Push": 1, "Pull": 1}, statusOn: "Push", wantFallbackLines: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newStreamsRig(t, tc.shape)
			run(t, "relay-agent streams", r.s.run)
			r.statusOn(t, tc.statusOn)
			r.eventually(t, "the trust bundle, the first instruction, is accepted", func() error {
				if n := counter(t, r.metrics.bundleUpdates.WithLabelValues("accepted")); n != 1 {
					return fmt.Errorf("%v bundles accepted", n)
				}
				return nil
			})
			if pushed := r.s.opts.Roots.pushedRoots(); len(pushed) != 1 || !pushed[0].Equal(r.ca.root.Cert) {
				t.Errorf("the server's bundle gave %d roots, want its root", len(pushed))
			}
			r.renewNowReaches(t, "instruction after the bundle")
			if calls, _, _, _ := r.relay.counts(); !maps.Equal(calls, tc.wantCalls) {
				t.Errorf("the server received calls %v, want %v", calls, tc.wantCalls)
			}
			if conns := r.relay.clientSerials(); len(conns) != 1 {
				t.Errorf("%d instruction streams opened, want 1", len(conns))
			}
			r.eventually(t, "the connected gauge shows push and pull", func() error {
				if got := gaugeSeries(t, r.metrics.connected); !maps.Equal(got, map[string]float64{"push": 1, "pull": 1}) {
					return fmt.Errorf("connected %v", got)
				}
				return nil
			})
			if n := counter(t, r.metrics.reconnects); n != 0 {
				t.Errorf("%v reconnects, want none", n)
			}
			shapes := r.logged("relay streams open")
			if len(shapes) != 1 || shapes[0].level != 1 || !slices.Equal(shapes[0].kv, []any{"stream", tc.shape}) {
				t.Errorf("lines naming the streams: %+v, want one at V(1) with stream %q", shapes, tc.shape)
			}
			fallbacks := r.logged(fallbackMessage)
			if len(fallbacks) != tc.wantFallbackLines {
				t.Errorf("%d lines say the server does not serve Connect, want %d", len(fallbacks), tc.wantFallbackLines)
			}
			for _, l := range r.lines() {
				if l.isError || (strings.Contains(l.msg, fallbackMessage) && l.level != 0) {
					t.Errorf("logged %q as error %v at V(%d): want info lines only, the fallback at level 0", l.msg, l.isError, l.level)
				}
			}
		})
	}
}

func TestStreamsOpenFailsWhenConnectIsRefusedForAnotherReason(t *testing.T) {
	r := newStreamsRig(t, shapeConnect)
	r.relay.mu.Lock()
	r.relay.refuseConnect = status.Error(codes.PermissionDenied, "cluster cluster-1 was deregistered")
	r.relay.mu.Unlock()
	l, err := r.s.open(t.Context())
	if err == nil {
		l.close()
		t.Fatal("open succeeded, want the refusal")
	}
	if status.Code(err) != codes.PermissionDenied || !strings.HasPrefix(err.Error(), "connect stream: ") {
		t.Errorf("open: %v, want the connect stream's PermissionDenied", err)
	}
	if calls, _, _, _ := r.relay.counts(); !maps.Equal(calls, map[string]int{"Connect": 1}) {
		t.Errorf("the server received calls %v, want Connect alone: no fallback to Push and Pull", calls)
	}
	if l := r.logged(fallbackMessage); len(l) != 0 {
		t.Errorf("logged a fallback: %+v", l)
	}
}

func TestStreamsMoveToTheRenewedCertificatesConnectionBeforeTheOldOneCloses(t *testing.T) {
	for _, tc := range []struct {
		name  string
		shape string
		// streams are the methods of the streams that move.
		streams []string
		// wantCalls are the calls the server receives, by method, in all.
		wantCalls map[string]int
	}{
		{name: "a Connect stream moves", shape: shapeConnect, streams: []string{"Connect"},
			wantCalls: map[string]int{"Connect": 2}},
		{name: "push and pull streams move, and the new connection asks for Connect first", shape: shapePushPull, streams: []string{"Push", "Pull"},
			wantCalls: map[string]int{"Connect": 2, "Push": 2, "Pull": 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newStreamsRig(t, tc.shape)
			run(t, "relay-agent streams", r.s.run)
			r.statusOn(t, tc.streams[0])
			first := r.relay.clientSerials()
			renewed := issuedClientCertificate(t, r.ca)
			r.s.opts.Provider.Set(renewed)
			r.eventually(t, "one handover", func() error {
				if n := counter(t, r.metrics.handovers); n != 1 {
					return fmt.Errorf("%v handovers", n)
				}
				return nil
			})
			r.eventually(t, "the old streams close", func() error {
				if _, _, open, _ := r.relay.counts(); !maps.Equal(open, map[string]int{tc.streams[0]: 1, tc.streams[len(tc.streams)-1]: 1}) {
					return fmt.Errorf("open streams %v", open)
				}
				return nil
			})
			calls, opened, _, peak := r.relay.counts()
			for _, m := range tc.streams {
				// The new stream opened while the old was open: two at once.
				if opened[m] != 2 || peak[m] != 2 {
					t.Errorf("%s streams: %d opened, at most %d open at once; want 2 and 2 (the new one before the old one closed)", m, opened[m], peak[m])
				}
			}
			if !maps.Equal(calls, tc.wantCalls) {
				t.Errorf("the server received calls %v, want %v", calls, tc.wantCalls)
			}
			if got, want := r.relay.clientSerials(), append(first, renewed.Leaf.SerialNumber.String()); !slices.Equal(got, want) {
				t.Errorf("client certificates of the streams %v, want %v: the new streams with the renewed one", got, want)
			}
			if n := counter(t, r.metrics.reconnects); n != 0 {
				t.Errorf("%v reconnects across the handover, want none", n)
			}
			r.renewNowReaches(t, "after the handover")
		})
	}
}

func TestStreamsEndTheSessionWhenTheServerEndsTheStreamAndAskForConnectAgain(t *testing.T) {
	for _, tc := range []struct {
		name  string
		shape string
		// in is the method of the stream that brings instructions; wantEnd
		// begins the error the session ends with.
		in      string
		wantEnd string
		// wantCalls are the calls the server receives, by method, once
		// the agent has reconnected.
		wantCalls map[string]int
	}{
		{name: "a Connect stream the server ends ends the session, and the next session opens Connect",
			shape: shapeConnect, in: "Connect", wantEnd: "connect stream: ", wantCalls: map[string]int{"Connect": 2}},
		{name: "a pull stream the server ends ends the session, and the next session asks for Connect again",
			shape: shapePushPull, in: "Pull", wantEnd: "pull stream: ", wantCalls: map[string]int{"Connect": 2, "Push": 2, "Pull": 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newStreamsRig(t, tc.shape)
			run(t, "relay-agent streams", r.s.run)
			r.statusOn(t, map[string]string{"Connect": "Connect", "Pull": "Push"}[tc.in])
			r.relay.end()
			r.eventually(t, "the agent reconnects", func() error {
				if n := counter(t, r.metrics.reconnects); n != 1 {
					return fmt.Errorf("%v reconnects", n)
				}
				if _, opened, open, _ := r.relay.counts(); opened[tc.in] != 2 || open[tc.in] != 1 {
					return fmt.Errorf("%s streams: %d opened, %d open", tc.in, opened[tc.in], open[tc.in])
				}
				return nil
			})
			var ends []string
			for _, l := range r.logged("relay connection ended; reconnecting") {
				for i := 0; i+1 < len(l.kv); i += 2 {
					if l.kv[i] == "error" {
						ends = append(ends, fmt.Sprint(l.kv[i+1]))
					}
				}
			}
			if len(ends) != 1 || !strings.HasPrefix(ends[0], tc.wantEnd) {
				t.Errorf("the session ended with %q, want one error beginning %q", ends, tc.wantEnd)
			}
			if calls, _, _, _ := r.relay.counts(); !maps.Equal(calls, tc.wantCalls) {
				t.Errorf("the server received calls %v, want %v", calls, tc.wantCalls)
			}
			r.renewNowReaches(t, "after the reconnect")
		})
	}
}

// TestServeMovesWhenTheCertificateChangedBeforeItWaited checks that a
// renewal the provider took while the streams were opening (or a message
// was being sent) is not lost: the watcher can load the renewed
// certificate, the old one and the renewed one again within a moment, and
// the streams must not stay on a connection made with the old one until
// it expires.
func TestServeMovesWhenTheCertificateChangedBeforeItWaited(t *testing.T) {
	r := newStreamsRig(t, shapeConnect)
	old := r.s.opts.Provider.Current()
	r.s.opts.Provider.Set(issuedClientCertificate(t, r.ca))
	l := &link{leaf: old.Leaf, errc: make(chan error, 1), send: func(*relayv1.PushMessage) error { return nil }}

	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := r.s.serve(ctx, l, nil); !errors.Is(err, errHandover) {
		t.Fatalf("serve on a link made with the old certificate: %v, want a handover at once", err)
	}
	// A handover that failed waits for its retry rather than trying again
	// at once, over and over.
	wait, cancelWait := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancelWait()
	if err := r.s.serve(wait, l, make(chan time.Time)); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("serve with a retry pending: %v, want it to wait", err)
	}
}
