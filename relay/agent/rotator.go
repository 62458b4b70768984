package agent

import (
	"context"
	"math/rand/v2"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"github.com/meshrelay/meshrelay/pkg/pki"
)

// maxWait bounds one wait of the rotator: a ticker behind the long
// one-shot timer, so that a missed event or a clock jump is caught.
const maxWait = 10 * time.Minute

// rotator obtains the client certificate when there is none, renews it at
// notAfter − ratio × lifetime (minus jitter), re-bootstraps when it has
// expired, and renews at once when the server asks. It runs only on the
// leader, so that replicas do not send several CSRs, and never touches a
// client secret managed elsewhere.
type rotator struct {
	agent   *Agent
	changed <-chan struct{}
	jitter  func() float64

	jitterFor  string
	jitterFrac float64
}

var _ manager.LeaderElectionRunnable = (*rotator)(nil)

func (r *rotator) NeedLeaderElection() bool { return true }

// Start runs the rotator until ctx ends.
func (r *rotator) Start(ctx context.Context) error {
	a := r.agent
	a.leading.Store(true)
	defer a.leading.Store(!a.cfg.LeaderElection)
	log := a.log.WithName("rotator")
	retry := newBackoff(time.Second, time.Minute)
	force := ""
	for {
		next, err := r.step(ctx, force)
		force = ""
		if err != nil {
			next = retry.Step()
			log.Info("cannot obtain a client certificate yet", "reason", err.Error(), "retryIn", next.Round(time.Millisecond))
		} else {
			retry = newBackoff(time.Second, time.Minute)
		}
		timer := time.NewTimer(min(next, maxWait))
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil
		case <-timer.C:
		case <-r.changed:
			timer.Stop()
		case reason := <-a.renewNow:
			timer.Stop()
			force = reason
		}
	}
}

// step obtains a certificate if one is needed now and returns how long to
// wait before looking again.
func (r *rotator) step(ctx context.Context, force string) (time.Duration, error) {
	a := r.agent
	t, err := a.watch(ctx)
	if err != nil {
		return 0, err
	}
	if t.managed {
		if force != "" {
			a.log.Info("ignoring a renewal request: the client secret is managed elsewhere", "reason", force)
		}
		return maxWait, nil
	}
	if t.client != nil && t.clientOK == nil && force == "" {
		at, err := pki.RenewalTime(t.client.Leaf, a.cfg.ClientTLSSecretRotationGracePeriodRatio, r.jitterOf(t.client.Leaf.SerialNumber.String()))
		if err != nil {
			return 0, err
		}
		if wait := at.Sub(a.now()); wait > 0 {
			return wait, nil
		}
	}
	var before string
	if t.client != nil {
		before = t.client.Leaf.SerialNumber.String()
	}
	how, err := a.obtain(ctx, t)
	if err != nil {
		a.metrics.rotations.WithLabelValues("failed").Inc()
		return 0, err
	}
	a.metrics.rotations.WithLabelValues("succeeded").Inc()
	a.log.Info("obtained client certificate", "how", how, "requestedBecause", orDefault(force, "schedule or missing certificate"))
	// Wait until the cache shows the new secret (and the provider holds it),
	// so the next step does not renew the old certificate again.
	_ = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
		t, err := a.watch(ctx)
		return err == nil && t.client != nil && t.client.Leaf.SerialNumber.String() != before, nil
	})
	return 0, nil
}

// jitterOf returns the jitter fraction of a certificate, fixed for its
// lifetime so that the renewal time does not move at each look.
func (r *rotator) jitterOf(serial string) float64 {
	if serial != r.jitterFor {
		r.jitterFor = serial
		if r.jitter != nil {
			r.jitterFrac = r.jitter()
		} else {
			r.jitterFrac = rand.Float64() * 0.2
		}
	}
	return r.jitterFrac
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

// backoff is an exponential backoff with jitter.
type backoff struct{ b wait.Backoff }

func newBackoff(initial, limit time.Duration) *backoff {
	return &backoff{wait.Backoff{Duration: initial, Factor: 2, Jitter: 0.5, Steps: 1 << 30, Cap: limit}}
}

func (b *backoff) Step() time.Duration { return b.b.Step() }

// runnableFunc is a manager runnable that runs on every replica.
type runnableFunc func(context.Context) error

func (f runnableFunc) Start(ctx context.Context) error { return f(ctx) }
func (runnableFunc) NeedLeaderElection() bool          { return false }

func nonLeader(f func(context.Context) error) manager.Runnable { return runnableFunc(f) }

// controllerOptions make the secret watcher run on every replica.
func controllerOptions() controller.Options {
	return controller.Options{NeedLeaderElection: ptr.To(false)}
}
