package agent

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"github.com/meshrelay/meshrelay/internal/backoff"
)

// errWaitingForTrust is what obtaining a certificate fails with while the
// agent has none of the secrets that let it get one: an install step not
// done yet rather than a failure.
var errWaitingForTrust = errors.New("waiting for trust")

// quietUnavailable is how many attempts in a row may find the relay server
// unavailable (restarting, starting, busy) before the failure is logged as
// an error: with the backoff, about half a minute.
const quietUnavailable = 5

// serverUnavailable reports whether err says the relay server could not be
// reached or answered Unavailable.
func serverUnavailable(err error) bool {
	var st interface{ GRPCStatus() *status.Status }
	return errors.As(err, &st) && st.GRPCStatus().Code() == codes.Unavailable
}

// secretLoader reads the agent's secrets and loads the provider with them:
// the watcher.
type secretLoader interface {
	load(ctx context.Context) (*material, error)
}

// obtainer gets a new client certificate and stores it in the client
// secret, returning how it did: the issuer.
type obtainer interface {
	obtain(ctx context.Context, t *material) (string, error)
}

// rotatorOptions are what the rotator needs.
type rotatorOptions struct {
	Secrets  secretLoader
	Obtainer obtainer
	// GraceRatio is the share of a certificate's lifetime left when it is
	// renewed.
	GraceRatio float64
	// Leading is set while the rotator runs; when it stops, it goes back to
	// true only without leader election.
	Leading        *atomic.Bool
	LeaderElection bool
	// Changed wakes the rotator when the watcher sees a secret change.
	Changed <-chan struct{}
	// RenewNow carries the server's renewal requests, with their reason.
	RenewNow <-chan string
	// RenewAt is the renewal time the server set, if any; nil means none
	// ever.
	RenewAt *renewAt
	// ClientSecret names the client secret in what the rotator logs.
	ClientSecret types.NamespacedName
	Clock        clock.Clock
	// Jitter draws a certificate's jitter fraction; Random draws the retry
	// backoff's jitter. Both return a fraction in [0, 1).
	Jitter, Random func() float64
	// Rotations counts attempts by result (succeeded or failed).
	Rotations *prometheus.CounterVec
	Log       logr.Logger
}

// rotator obtains the client certificate when there is none, renews it at
// notAfter − ratio × lifetime (minus jitter) or at the time the server set
// if that is earlier, re-bootstraps when it has expired, and renews at
// once when the server asks. It runs only on the leader, so that replicas
// do not send several CSRs, and never touches a client secret managed
// elsewhere nor a certificate the relay server did not issue
// (issuedByRelay).
type rotator struct {
	opts   rotatorOptions
	jitter certJitter
	// told is the server's renewal time last logged, so that it is logged
	// once.
	told time.Time
	// foreignSerial is the certificate of another issuer last reported as
	// in use, so that it is reported once.
	foreignSerial string
	// refusedToken is the hash of a fresh bootstrap token the server
	// refused freshTokenTries times while the certificate was still
	// valid: it is not tried again before the certificate needs
	// replacing, so that it does not block renewals. refusing and
	// refusals count the refusals of the token tried last.
	refusedToken string
	refusing     string
	refusals     int
}

// freshTokenTries is how many refusals a fresh token gets, a backoff apart,
// before the agent keeps its certificate instead: relay-server judges a
// token by its cache, which can be a moment behind the registration that
// wrote the token's record.
const freshTokenTries = 3

// newRotator returns a rotator; opts.Jitter and opts.Random must be set.
func newRotator(opts rotatorOptions) *rotator {
	return &rotator{opts: opts, jitter: certJitter{draw: opts.Jitter}}
}

var _ manager.LeaderElectionRunnable = (*rotator)(nil)

// NeedLeaderElection makes the manager run the rotator on the leader only.
func (r *rotator) NeedLeaderElection() bool { return true }

// Start runs the rotator until ctx ends. After a failure it retries with
// backoff; otherwise it looks again when the certificate is due, at most
// maxWait later, when a secret changes, or when the server asks.
func (r *rotator) Start(ctx context.Context) error {
	o := &r.opts
	o.Leading.Store(true)
	defer o.Leading.Store(!o.LeaderElection)
	log := o.Log.WithName("rotator")
	retry := backoff.New(RotateRetryInitial, RotateRetryLimit, o.Random)
	force := ""
	unavailable := 0 // consecutive failures with the server unavailable
	var serverTime <-chan struct{}
	if o.RenewAt != nil {
		serverTime = o.RenewAt.wake
	}
	for {
		next, err := r.step(ctx, force)
		force = ""
		if err != nil {
			next = retry.Step()
			if serverUnavailable(err) {
				unavailable++
			} else {
				unavailable = 0
			}
			switch {
			case unavailable > 0 && unavailable < quietUnavailable:
				// A server restarting, or busy: retried quietly, and an
				// error only if it lasts.
				log.Info("relay server unavailable; retrying", "reason", err.Error(), "retryIn", next.Round(time.Millisecond))
			case refusedByServer(err):
				// The server's message names the fix (a fresh token from
				// relayctl register, which wakes the rotator at once).
				log.Error(err, "relay server refused to issue a client certificate", "retryIn", next.Round(time.Millisecond))
			case errors.Is(err, errWaitingForTrust):
				// Installing: the secrets are copied after the agent starts.
				log.Info("cannot obtain a client certificate yet", "reason", err.Error(), "retryIn", next.Round(time.Millisecond))
			default:
				log.Error(err, "failed to obtain a client certificate", "retryIn", next.Round(time.Millisecond))
			}
		} else {
			retry.Reset()
			unavailable = 0
		}
		timer := o.Clock.NewTimer(min(next, maxWait))
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil
		case <-timer.C():
		case <-o.Changed:
			timer.Stop()
		case reason := <-o.RenewNow:
			timer.Stop()
			force = reason
		case <-serverTime:
			timer.Stop()
		}
	}
}

// step obtains a certificate if one is needed now and returns how long to
// wait before looking again.
func (r *rotator) step(ctx context.Context, force string) (time.Duration, error) {
	o := &r.opts
	t, err := o.Secrets.load(ctx)
	if err != nil {
		return 0, err
	}
	if t.managed {
		if force != "" {
			o.Log.Info("ignoring a renewal request: the client secret is managed elsewhere", "reason", force)
		}
		return maxWait, nil
	}
	if t.foreign {
		return r.foreign(t, force), nil
	}
	if t.freshToken && t.tokenHash == r.refusedToken {
		t.freshToken = false
	}
	if t.freshToken {
		force = orDefault(force, "a fresh bootstrap token")
	}
	if t.client != nil && t.clientOK == nil && force == "" {
		leaf := t.client.Leaf
		wait, err := renewalWait(leaf, o.GraceRatio, r.jitter.of(leaf.SerialNumber.String()), o.Clock.Now())
		if err != nil {
			return 0, err
		}
		wait, force = r.serverTime(leaf, wait)
		if wait > 0 {
			return wait, nil
		}
	}
	var before string
	if t.client != nil {
		before = t.client.Leaf.SerialNumber.String()
	}
	how, err := o.Obtainer.obtain(ctx, t)
	if err != nil {
		o.Rotations.WithLabelValues("failed").Inc()
		if t.freshToken && t.client != nil && t.clientOK == nil && refusedByServer(err) {
			if r.refusing != t.tokenHash {
				r.refusing, r.refusals = t.tokenHash, 0
			}
			if r.refusals++; r.refusals >= freshTokenTries {
				r.refusedToken = t.tokenHash
			}
		}
		return 0, err
	}
	o.Rotations.WithLabelValues("succeeded").Inc()
	o.Log.Info("obtained client certificate", "how", how, "requestedBecause", orDefault(force, "schedule or missing certificate"))
	r.awaitLoaded(ctx, before)
	return 0, nil
}

// The rotator looks this often, for at most storedTimeout, for the new
// certificate in the cache.
const (
	storedPoll    = 100 * time.Millisecond
	storedTimeout = 10 * time.Second
)

// awaitLoaded waits until the cache shows a certificate other than before
// (and the provider holds it), so that the next step does not renew the
// old certificate again. It gives up after storedTimeout.
func (r *rotator) awaitLoaded(ctx context.Context, before string) {
	o := &r.opts
	deadline := o.Clock.Now().Add(storedTimeout)
	for {
		if t, err := o.Secrets.load(ctx); err == nil && t.client != nil && t.client.Leaf.SerialNumber.String() != before {
			return
		}
		if !o.Clock.Now().Before(deadline) {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-o.Clock.After(storedPoll):
		}
	}
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}
