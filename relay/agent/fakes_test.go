package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"math/big"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"k8s.io/utils/clock"
	clocktesting "k8s.io/utils/clock/testing"
)

// t0 is when every fake-clock test starts.
var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// armedClock is a fake clock that reports every timer the code under test
// arms (NewTimer and After), and waits until the test has taken the
// report: the test then knows the code is waiting, and for how long,
// before it moves time. Nothing sleeps.
type armedClock struct {
	*clocktesting.FakeClock
	armed chan time.Duration
}

func newArmedClock() *armedClock {
	return &armedClock{FakeClock: clocktesting.NewFakeClock(t0), armed: make(chan time.Duration)}
}

func (c *armedClock) NewTimer(d time.Duration) clock.Timer {
	t := c.FakeClock.NewTimer(d)
	c.armed <- d
	return t
}

func (c *armedClock) After(d time.Duration) <-chan time.Time {
	ch := c.FakeClock.After(d)
	c.armed <- d
	return ch
}

// next returns the duration of the next timer armed.
func (c *armedClock) next(t *testing.T) time.Duration {
	t.Helper()
	select {
	case d := <-c.armed:
		return d
	case <-time.After(10 * time.Second):
		t.Fatal("the code under test armed no timer: it is stuck or busy")
		return 0
	}
}

// fire waits for the next timer, moves the clock to it and returns its
// duration.
func (c *armedClock) fire(t *testing.T) time.Duration {
	t.Helper()
	d := c.next(t)
	c.Step(d)
	return d
}

// start runs f in the background with the clock; the test's cleanup ends
// it, taking the timers it arms meanwhile.
func (c *armedClock) start(t *testing.T, f func(context.Context)) context.CancelFunc {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(ctx)
	}()
	stop := func() {
		cancel()
		for {
			select {
			case <-done:
				return
			case <-c.armed:
			case <-time.After(10 * time.Second):
				t.Error("did not stop within 10s of its context ending")
				return
			}
		}
	}
	t.Cleanup(stop)
	return stop
}

// fixed returns a random source that always draws f.
func fixed(f float64) func() float64 { return func() float64 { return f } }

// leaf returns a client certificate known only by its serial and validity:
// what the rotator looks at.
func leaf(serial int64, notBefore time.Time, lifetime time.Duration) *tls.Certificate {
	return &tls.Certificate{Leaf: &x509.Certificate{SerialNumber: big.NewInt(serial), NotBefore: notBefore, NotAfter: notBefore.Add(lifetime)}}
}

// fakeSecrets is the watcher as the rotator sees it: it returns the
// material it was given, as the cache would.
type fakeSecrets struct {
	mu    sync.Mutex
	m     material
	loads int
}

func (f *fakeSecrets) load(context.Context) (*material, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.loads++
	m := f.m
	return &m, nil
}

func (f *fakeSecrets) set(m material) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.m = m
}

// fakeRenewer is the issuer as the rotator sees it: it fails with the
// errors it is given, in order, then issues certificates of lifetime and
// stores them in secrets (unless hold is set: then the cache lags behind
// and the test stores them).
type fakeRenewer struct {
	clock    clock.PassiveClock
	secrets  *fakeSecrets
	lifetime time.Duration
	hold     bool

	mu     sync.Mutex
	errs   []error
	calls  []time.Time
	given  []*material
	serial int64
	issued *tls.Certificate
}

func (f *fakeRenewer) obtain(_ context.Context, t *material) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, f.clock.Now())
	f.given = append(f.given, t)
	if len(f.errs) > 0 {
		err := f.errs[0]
		f.errs = f.errs[1:]
		return "", err
	}
	f.serial++
	f.issued = leaf(1000+f.serial, f.clock.Now(), f.lifetime)
	if !f.hold {
		f.secrets.set(material{client: f.issued})
	}
	return "renewed", nil
}

// obtained returns when obtain was called, by the clock.
func (f *fakeRenewer) obtained() []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]time.Time(nil), f.calls...)
}

// rotatorRig is a rotator on an armed clock with a fake watcher and a fake
// renewer.
type rotatorRig struct {
	clock    *armedClock
	secrets  *fakeSecrets
	renewer  *fakeRenewer
	renewNow chan string
	renewAt  *renewAt
	changed  signal
	leading  *atomic.Bool
	metrics  *prometheus.CounterVec
	opts     rotatorOptions
}

func newRotatorRig(t *testing.T, m material) *rotatorRig {
	c := newArmedClock()
	s := &fakeSecrets{m: m}
	r := &rotatorRig{
		clock:    c,
		secrets:  s,
		renewer:  &fakeRenewer{clock: c, secrets: s, lifetime: time.Hour},
		renewNow: make(chan string, 1),
		renewAt:  newRenewAt(),
		changed:  newSignal(),
		leading:  &atomic.Bool{},
		metrics:  newAgentMetrics().rotations,
	}
	r.opts = rotatorOptions{
		Secrets: s, Obtainer: r.renewer, GraceRatio: 0.5, Leading: r.leading, LeaderElection: true,
		Changed: r.changed, RenewNow: r.renewNow, RenewAt: r.renewAt, Clock: c, Jitter: fixed(0), Random: fixed(0),
		Rotations: r.metrics, Log: testr.New(t),
	}
	return r
}

// start runs the rotator until the test ends or the returned function is
// called.
func (r *rotatorRig) start(t *testing.T) context.CancelFunc {
	rot := newRotator(r.opts)
	return r.clock.start(t, func(ctx context.Context) { _ = rot.Start(ctx) })
}

// failNext makes the next calls to obtain fail with errs, in order.
func (f *fakeRenewer) failNext(errs ...error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.errs = append(f.errs, errs...)
}

// latest returns the last certificate issued.
func (f *fakeRenewer) latest() *tls.Certificate {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.issued
}

// counter returns a counter's value.
func counter(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}
