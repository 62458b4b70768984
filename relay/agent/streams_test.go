package agent

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"k8s.io/apimachinery/pkg/types"

	"github.com/meshrelay/meshrelay/pkg/config"
)

func TestRedialBacksOffBetweenFailedSessions(t *testing.T) {
	ms := func(n float64) time.Duration { return time.Duration(n * float64(time.Millisecond)) }
	for _, tc := range []struct {
		name   string
		random float64
		want   []time.Duration
	}{
		{"without jitter the delays double from half a second and stop at thirty seconds", 0,
			[]time.Duration{ms(500), ms(1000), ms(2000), ms(4000), ms(8000), ms(16000), ms(30000), ms(30000)}},
		{"jitter adds its share of half of each delay", 0.2,
			[]time.Duration{ms(550), ms(1100), ms(2200), ms(4400), ms(8800), ms(17600), ms(33000), ms(33000)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newArmedClock()
			sessions := 0
			c.start(t, func(ctx context.Context) {
				redial(ctx, c, fixed(tc.random), testr.New(t), func(context.Context) error {
					sessions++
					return errors.New("connection refused")
				})
			})
			var got []time.Duration
			for range tc.want {
				got = append(got, c.fire(t))
			}
			if !equalDurations(got, tc.want) {
				t.Errorf("delays %v, want %v", got, tc.want)
			}
			c.next(t)
			if sessions != len(tc.want)+1 {
				t.Errorf("%d sessions, want %d: one after each delay", sessions, len(tc.want)+1)
			}
		})
	}
}

func TestRedialStartsTheBackoffAgainAfterALongSession(t *testing.T) {
	c := newArmedClock()
	// How long each session lasts before it fails.
	lasts := []time.Duration{0, 0, 0, 61 * time.Second, time.Minute, 0}
	n := 0
	c.start(t, func(ctx context.Context) {
		redial(ctx, c, fixed(0), testr.New(t), func(context.Context) error {
			if n < len(lasts) {
				c.Step(lasts[n])
			}
			n++
			return errors.New("stream closed")
		})
	})
	var got []time.Duration
	for range lasts {
		got = append(got, c.fire(t))
	}
	// Over a minute starts again from half a second; exactly a minute does
	// not.
	want := []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second, 500 * time.Millisecond, time.Second, 2 * time.Second}
	if !equalDurations(got, want) {
		t.Errorf("delays %v, want %v", got, want)
	}
}

func TestRedialEndsWithItsContextWithoutWaiting(t *testing.T) {
	c := newArmedClock()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		redial(ctx, c, fixed(0), testr.New(t), func(ctx context.Context) error {
			cancel()
			return ctx.Err()
		})
	}()
	select {
	case <-done:
	case d := <-c.armed:
		t.Fatalf("armed a %s timer after its context ended", d)
	case <-time.After(10 * time.Second):
		t.Fatal("did not return")
	}
}

func TestSessionWaitsForAClientCertificate(t *testing.T) {
	newStreamsOn := func(c *armedClock, insecure bool) *streams {
		return newStreams(streamsOptions{
			Config: &config.Agent{Insecure: insecure}, Provider: NewProvider(), Clock: c, Log: testr.New(t),
			ClientSecret: types.NamespacedName{Namespace: "ns", Name: "relay-client-tls-secret"},
		})
	}
	t.Run("it says so every 30 seconds and goes on when the provider gets one", func(t *testing.T) {
		c := newArmedClock()
		s := newStreamsOn(c, false)
		errc := make(chan error, 1)
		c.start(t, func(ctx context.Context) { errc <- s.awaitCertificate(ctx) })
		for i := range 3 {
			if d := c.fire(t); d != certificateReminder {
				t.Fatalf("reminder %d after %s, want %s", i, d, certificateReminder)
			}
		}
		c.next(t)
		s.opts.Provider.Set(leaf(1, t0, time.Hour))
		select {
		case err := <-errc:
			if err != nil {
				t.Errorf("awaitCertificate: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("still waiting after the provider got a certificate")
		}
	})
	t.Run("in insecure mode it does not wait", func(t *testing.T) {
		c := newArmedClock()
		if err := newStreamsOn(c, true).awaitCertificate(t.Context()); err != nil {
			t.Errorf("awaitCertificate: %v", err)
		}
	})
	t.Run("it ends with its context", func(t *testing.T) {
		c := newArmedClock()
		s := newStreamsOn(c, false)
		ctx, cancel := context.WithCancel(t.Context())
		errc := make(chan error, 1)
		go func() { errc <- s.awaitCertificate(ctx) }()
		c.next(t)
		cancel()
		if err := <-errc; !errors.Is(err, context.Canceled) {
			t.Errorf("awaitCertificate = %v, want context.Canceled", err)
		}
	})
}
