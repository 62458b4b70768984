package agent

import (
	"context"
	"fmt"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"

	"github.com/meshrelay/meshrelay/internal/backoff"
	"github.com/meshrelay/meshrelay/pkg/config"
	relayv1 "github.com/meshrelay/meshrelay/relay/api/v1"
)

// The streams' reconnect delays; a session that lasted longer than
// StableSession starts them again from the first. The load generator's
// simulated agents reconnect with them too.
const (
	RedialInitial = 500 * time.Millisecond
	RedialLimit   = 30 * time.Second
	StableSession = time.Minute
)

// intermediateCA is the Istio CA as the streams see it: it answers the
// server's federated-trust instructions and reports cacerts in the status.
type intermediateCA interface {
	onIssue(in *relayv1.IssueIntermediate)
	onIssued(ctx context.Context, in *relayv1.IntermediateIssued)
	status() *relayv1.IstioCAStatus
}

// streamsOptions are what the streams need.
type streamsOptions struct {
	// Config says how to dial the server.
	Config  *config.Agent
	Replica string
	// Provider and Roots authenticate each connection.
	Provider *Provider
	Roots    *rootSet
	// ClientSecret is named while the agent waits for a certificate.
	ClientSecret types.NamespacedName
	// IstioCA is nil when federated trust is off.
	IstioCA intermediateCA
	// RenewNow passes the server's renewal requests to the rotator, and
	// RenewAt the renewal times it sets.
	RenewNow chan<- string
	RenewAt  *renewAt
	// Bundles follows the trust bundles the server pushes; Updates counts
	// them (accepted or refused).
	Bundles *trustBundles
	Updates *prometheus.CounterVec
	// StatusDirty asks for a fresh status; PushOut queues other messages
	// for the server (the Connect or push stream).
	StatusDirty <-chan struct{}
	PushOut     <-chan *relayv1.PushMessage
	// Connected is 1, for push and for pull, while that stream is open or
	// a Connect stream, which carries both, is; Reconnects counts the
	// sessions that ended (the streams dropped) and Handovers the moves of
	// the streams to a connection with a renewed certificate.
	Connected  *prometheus.GaugeVec
	Reconnects prometheus.Counter
	Handovers  prometheus.Counter
	Clock      clock.Clock
	// Random draws the reconnect backoff's jitter, a fraction in [0, 1).
	Random func() float64
	Log    logr.Logger
}

// streams keeps the streams to the server open, on every replica: one
// Connect stream, or a push and a pull stream with a server that predates
// Connect (session).
type streams struct{ opts streamsOptions }

// newStreams returns the streams; run opens them.
func newStreams(opts streamsOptions) *streams { return &streams{opts: opts} }

// run keeps the streams open, reconnecting with backoff and jitter, until
// ctx ends. Each connection's handshakes take the provider's current
// certificate; after a rotation the streams move to a new connection
// before the old one closes (session).
func (s *streams) run(ctx context.Context) error {
	redial(ctx, s.opts.Clock, s.opts.Random, s.opts.Log.WithName("client"), func(ctx context.Context) error {
		err := s.session(ctx)
		if ctx.Err() == nil && s.opts.Reconnects != nil {
			s.opts.Reconnects.Inc()
		}
		return err
	})
	return nil
}

// redial runs session again and again until ctx ends, waiting between runs
// with backoff; a session that lasted over StableSession starts the backoff
// again.
func redial(ctx context.Context, c clock.Clock, random func() float64, log logr.Logger, session func(context.Context) error) {
	retry := backoff.New(RedialInitial, RedialLimit, random)
	for {
		start := c.Now()
		err := session(ctx)
		if ctx.Err() != nil {
			return
		}
		if c.Since(start) > StableSession {
			retry.Reset()
		}
		d := retry.Step()
		log.Info("relay connection ended; reconnecting", "error", fmt.Sprint(err), "in", d.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			return
		case <-c.After(d):
		}
	}
}
