package agent

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
)

// foreignLeaf is material holding a client certificate of another issuer
// that starts at notBefore and lives lifetime: usable unless it has
// expired at t0.
func foreignLeaf(notBefore time.Time, lifetime time.Duration) material {
	c := leaf(1, notBefore, lifetime)
	m := material{client: c, held: c.Leaf, foreign: true, token: []byte("a-token"), tokenHash: "h"}
	if !t0.Before(c.Leaf.NotAfter) {
		m.client, m.clientOK = nil, errors.New("certificate expired")
	}
	return m
}

func TestRotatorNeverRenewsACertificateOfAnotherIssuer(t *testing.T) {
	for _, tc := range []struct {
		name string
		have material
		// waits are the rotator's first waits; wantErrors the error lines
		// logged meanwhile, each containing all of its words.
		waits      []time.Duration
		wantErrors [][]string
	}{
		{"past its renewal time it is not renewed, and an error says to renew it with its issuer",
			foreignLeaf(t0.Add(-40*time.Minute), time.Hour), []time.Duration{maxWait},
			[][]string{{"not by the relay server", "due for renewal", "renew it with its issuer"}}},
		{"expired, it is not replaced, even with a bootstrap token, and an error says what to do",
			foreignLeaf(t0.Add(-2*time.Hour), time.Hour), []time.Duration{maxWait},
			[][]string{{"not by the relay server", "expired", "renew it with its issuer", "relayctl register"}}},
		{"before its renewal time the rotator waits for it quietly, then the error comes",
			foreignLeaf(t0.Add(-25*time.Minute), time.Hour), []time.Duration{5 * time.Minute, maxWait},
			[][]string{{"due for renewal"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRotatorRig(t, tc.have)
			logs := &recordedLog{}
			r.opts.Log = logr.New(logs)
			r.start(t)
			for i, want := range tc.waits {
				if i > 0 && len(logs.errorLines()) != 0 {
					t.Fatalf("error logged before the certificate was due: %q", logs.errorLines())
				}
				if got := r.clock.fire(t); got != want {
					t.Fatalf("wait %d: %s, want %s", i, got, want)
				}
			}
			// The server asks for a renewal, and sets a renewal time: both
			// are ignored.
			r.renewNow <- "test"
			r.clock.next(t)
			r.renewAt.request(t0, "spread", tc.have.held.SerialNumber.String())
			r.clock.next(t)
			if got := r.renewer.obtained(); len(got) != 0 {
				t.Fatalf("obtained a certificate at %v, want never", got)
			}
			errs := logs.errorLines()
			if len(errs) < len(tc.wantErrors) {
				t.Fatalf("error lines %q, want at least %d", errs, len(tc.wantErrors))
			}
			for i, words := range tc.wantErrors {
				for _, w := range words {
					if !strings.Contains(errs[i], w) {
						t.Errorf("error %q does not say %q", errs[i], w)
					}
				}
			}
		})
	}
}

func TestRotatorRenewsAtTheServersTimeWhenItIsEarlier(t *testing.T) {
	cert := leaf(1, t0, time.Hour) // renewed at 30m on its own schedule (ratio 0.5)
	serial := cert.Leaf.SerialNumber.String()
	for _, tc := range []struct {
		name string
		// set records the server's times before the rotator starts.
		set   func(r *renewAt)
		waits []time.Duration
		// obtainedAt is when the rotator renews, after t0.
		obtainedAt time.Duration
	}{
		{"a time before the schedule pulls the renewal forward",
			func(r *renewAt) { r.request(t0.Add(5*time.Minute), "spread", serial) }, []time.Duration{5 * time.Minute}, 5 * time.Minute},
		{"a time in the past renews now",
			func(r *renewAt) { r.request(t0.Add(-time.Hour), "CA change", serial) }, nil, 0},
		{"a time after the schedule changes nothing",
			func(r *renewAt) { r.request(t0.Add(50*time.Minute), "late", serial) }, []time.Duration{maxWait, maxWait, maxWait}, 30 * time.Minute},
		{"the latest time the server set is the one kept",
			func(r *renewAt) {
				r.request(t0.Add(2*time.Minute), "first", serial)
				r.request(t0.Add(20*time.Minute), "second", serial)
			}, []time.Duration{maxWait, maxWait}, 20 * time.Minute},
		{"a time set for another certificate does not apply",
			func(r *renewAt) { r.request(t0.Add(time.Minute), "stale", "another") }, []time.Duration{maxWait, maxWait, maxWait}, 30 * time.Minute},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRotatorRig(t, material{client: cert})
			tc.set(r.renewAt)
			// Set before the rotator starts, the times need no wake-up:
			// its first look reads them.
			<-r.renewAt.wake
			r.start(t)
			for i, want := range tc.waits {
				if got := r.clock.fire(t); got != want {
					t.Fatalf("wait %d: %s, want %s (obtained at %v)", i, got, want, r.renewer.obtained())
				}
			}
			if d := r.clock.fire(t); d != 0 {
				t.Fatalf("after the waits the rotator waits %s, want 0: a look at the new certificate", d)
			}
			if got := r.renewer.obtained(); len(got) != 1 || !got[0].Equal(t0.Add(tc.obtainedAt)) {
				t.Fatalf("obtained at %v, want once at t0+%s", got, tc.obtainedAt)
			}
			// The new certificate is renewed on its own schedule: the
			// server's time was for the one it replaced.
			if d := r.clock.next(t); d != maxWait {
				t.Errorf("the new certificate is looked at after %s, want %s", d, maxWait)
			}
		})
	}

	t.Run("a time set while the rotator waits wakes it", func(t *testing.T) {
		r := newRotatorRig(t, material{client: cert})
		r.start(t)
		if d := r.clock.next(t); d != maxWait {
			t.Fatalf("first wait %s, want %s", d, maxWait)
		}
		r.renewAt.request(t0.Add(3*time.Minute), "spread", serial)
		if d := r.clock.fire(t); d != 3*time.Minute {
			t.Fatalf("after the server's time the rotator waits %s, want 3m", d)
		}
		r.clock.next(t)
		if got := r.renewer.obtained(); len(got) != 1 || !got[0].Equal(t0.Add(3*time.Minute)) {
			t.Errorf("obtained at %v, want once at t0+3m", got)
		}
	})
}
