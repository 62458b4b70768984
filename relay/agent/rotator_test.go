package agent

import (
	"errors"
	"testing"
	"time"
)

func TestRotatorRenewsWhenTheGracePeriodStarts(t *testing.T) {
	expired := errors.New("certificate expired")
	for _, tc := range []struct {
		name          string
		have          material
		ratio, jitter float64
		// waits are the timers that fire before the rotator obtains a
		// certificate.
		waits []time.Duration
	}{
		{"a one-minute certificate with ratio 0.5 is renewed after 30 seconds",
			material{client: leaf(1, t0, time.Minute)}, 0.5, 0, []time.Duration{30 * time.Second}},
		{"jitter 0.2 renews a one-minute certificate 6 seconds earlier",
			material{client: leaf(1, t0, time.Minute)}, 0.5, 0.2, []time.Duration{24 * time.Second}},
		{"another jitter gives another renewal time, so that agents do not renew together",
			material{client: leaf(1, t0, time.Minute)}, 0.5, 0.1, []time.Duration{27 * time.Second}},
		{"a one-hour certificate is looked at every ten minutes until it is due after thirty",
			material{client: leaf(1, t0, time.Hour)}, 0.5, 0, []time.Duration{10 * time.Minute, 10 * time.Minute, 10 * time.Minute}},
		{"a timer shorter than ten minutes is not cut",
			material{client: leaf(1, t0.Add(-21*time.Minute), time.Hour)}, 0.5, 0, []time.Duration{9 * time.Minute}},
		{"a certificate with 20 of its 60 minutes left is renewed at once",
			material{client: leaf(1, t0.Add(-40*time.Minute), time.Hour)}, 0.5, 0, nil},
		{"a certificate exactly at its renewal time is renewed at once",
			material{client: leaf(1, t0.Add(-30*time.Minute), time.Hour)}, 0.5, 0, nil},
		{"an expired certificate is replaced at once",
			material{client: leaf(1, t0.Add(-2*time.Hour), time.Hour), clientOK: expired}, 0.5, 0, nil},
		{"a missing certificate is obtained at once",
			material{clientOK: &errMissing{}}, 0.5, 0, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRotatorRig(t, tc.have)
			r.opts.GraceRatio, r.opts.Jitter = tc.ratio, fixed(tc.jitter)
			r.start(t)
			due := t0
			for i, want := range tc.waits {
				if got := r.clock.fire(t); got != want {
					t.Fatalf("timer %d: %s, want %s (obtained at %v)", i, got, want, r.renewer.obtained())
				}
				due = due.Add(want)
			}
			if d := r.clock.next(t); d != 0 {
				t.Fatalf("after the schedule the rotator waits %s, want 0: a look at the new certificate", d)
			}
			if got := r.renewer.obtained(); len(got) != 1 || !got[0].Equal(due) {
				t.Fatalf("obtained at %v, want once at %v", got, due)
			}
			if c := counter(t, r.metrics.WithLabelValues("succeeded")); c != 1 {
				t.Errorf("succeeded rotations = %v, want 1", c)
			}
		})
	}
}

func TestRotatorSchedulesTheNewCertificateAfterRenewing(t *testing.T) {
	r := newRotatorRig(t, material{client: leaf(1, t0, time.Minute)})
	r.renewer.lifetime = time.Minute
	r.start(t)
	r.clock.fire(t) // 30s: renewed
	if d := r.clock.fire(t); d != 0 {
		t.Fatalf("after renewing the rotator waits %s, want 0", d)
	}
	if d := r.clock.next(t); d != 30*time.Second {
		t.Errorf("the new one-minute certificate is looked at again after %s, want 30s", d)
	}
	if n := len(r.renewer.obtained()); n != 1 {
		t.Errorf("obtained %d times, want 1: the new certificate is not renewed again", n)
	}
}

func TestRotatorAnswersRenewalRequestsAndSecretChanges(t *testing.T) {
	fresh := material{client: leaf(1, t0, time.Hour)}
	for _, tc := range []struct {
		name string
		have material
		// poke wakes the rotator while it waits.
		poke      func(r *rotatorRig)
		wantWait  time.Duration
		obtainsAt []time.Time
	}{
		{"a renewal asked by the server is done at once, before the schedule",
			fresh, func(r *rotatorRig) { r.renewNow <- "test" }, 0, []time.Time{t0}},
		{"a client secret managed elsewhere is not renewed when the server asks",
			material{client: leaf(1, t0, time.Hour), managed: true}, func(r *rotatorRig) { r.renewNow <- "test" }, maxWait, nil},
		{"a client secret managed elsewhere is not replaced even when it has expired",
			material{client: leaf(1, t0.Add(-2*time.Hour), time.Hour), clientOK: errors.New("expired"), managed: true}, func(r *rotatorRig) { r.changed.notify() }, maxWait, nil},
		{"a secret change makes the rotator look again at once",
			fresh, func(r *rotatorRig) {
				r.secrets.set(material{client: leaf(2, t0.Add(-50*time.Minute), time.Hour)})
				r.changed.notify()
			}, 0, []time.Time{t0}},
		{"a secret change that leaves the certificate fresh renews nothing",
			fresh, func(r *rotatorRig) { r.changed.notify() }, maxWait, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRotatorRig(t, tc.have)
			r.start(t)
			if d := r.clock.next(t); d != maxWait {
				t.Fatalf("first wait %s, want %s", d, maxWait)
			}
			tc.poke(r)
			if d := r.clock.next(t); d != tc.wantWait {
				t.Errorf("then the rotator waits %s, want %s", d, tc.wantWait)
			}
			got := r.renewer.obtained()
			if len(got) != len(tc.obtainsAt) || (len(got) > 0 && !got[0].Equal(tc.obtainsAt[0])) {
				t.Errorf("obtained at %v, want %v", got, tc.obtainsAt)
			}
		})
	}
}

func TestRotatorBacksOffAfterFailures(t *testing.T) {
	s := func(f float64) time.Duration { return time.Duration(f * float64(time.Second)) }
	for _, tc := range []struct {
		name   string
		random float64
		waits  []time.Duration
	}{
		{"without jitter the delays double from one second and stop at one minute", 0,
			[]time.Duration{s(1), s(2), s(4), s(8), s(16), s(32), s(60), s(60)}},
		{"jitter adds its share of each delay, up to half", 0.5,
			[]time.Duration{s(1.25), s(2.5), s(5), s(10), s(20), s(40), s(75), s(75)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRotatorRig(t, material{clientOK: &errMissing{}})
			r.opts.Random = fixed(tc.random)
			refused := errors.New("relay server refused")
			for range tc.waits {
				r.renewer.failNext(refused)
			}
			r.start(t)
			for i, want := range tc.waits {
				if got := r.clock.fire(t); got != want {
					t.Fatalf("retry %d after %s, want %s", i, got, want)
				}
			}
			if d := r.clock.fire(t); d != 0 {
				t.Fatalf("after a success the rotator waits %s, want 0", d)
			}
			if d := r.clock.next(t); d != maxWait {
				t.Fatalf("the new certificate is looked at after %s, want %s", d, maxWait)
			}

			r.renewer.failNext(refused)
			r.renewNow <- "test"
			if got, want := r.clock.next(t), tc.waits[0]; got != want {
				t.Errorf("a failure after a success retries after %s, want the first delay %s", got, want)
			}
			if f := counter(t, r.metrics.WithLabelValues("failed")); f != float64(len(tc.waits)+1) {
				t.Errorf("failed rotations = %v, want %d", f, len(tc.waits)+1)
			}
		})
	}
}

func TestRotatorKeepsACertificatesJitterWhileItLives(t *testing.T) {
	n := 0
	r := newRotatorRig(t, material{client: leaf(1, t0, 100*time.Minute)})
	r.opts.Jitter = func() float64 {
		n++
		if n == 1 {
			return 0.1
		}
		return 0.9
	}
	r.start(t)
	// Jitter 0.1 and ratio 0.5: the grace period is 55 of 100 minutes, so
	// the renewal is due after 45. Drawn again at each look, 0.9 would make
	// it due after 5.
	var waits []time.Duration
	for range 5 {
		waits = append(waits, r.clock.fire(t))
	}
	want := []time.Duration{10 * time.Minute, 10 * time.Minute, 10 * time.Minute, 10 * time.Minute, 5 * time.Minute}
	if !equalDurations(waits, want) {
		t.Fatalf("waits %v, want %v", waits, want)
	}
	if d := r.clock.fire(t); d != 0 {
		t.Fatalf("after the schedule the rotator waits %s, want 0", d)
	}
	if got := r.renewer.obtained(); len(got) != 1 || !got[0].Equal(t0.Add(45*time.Minute)) {
		t.Fatalf("obtained at %v, want once at 45m", got)
	}
	// The new one-hour certificate draws 0.9: due after 60 − 57 minutes.
	if d := r.clock.next(t); d != 3*time.Minute {
		t.Errorf("the new certificate is due after %s, want 3m: it draws its own jitter", d)
	}
	if n != 2 {
		t.Errorf("jitter drawn %d times, want 2: once per certificate", n)
	}
}

func TestRotatorWaitsForTheCacheToShowTheNewCertificate(t *testing.T) {
	t.Run("it looks every 100ms until the cache shows it", func(t *testing.T) {
		r := newRotatorRig(t, material{clientOK: &errMissing{}})
		r.renewer.hold = true
		r.start(t)
		for i := range 3 {
			if d := r.clock.fire(t); d != storedPoll {
				t.Fatalf("poll %d after %s, want %s", i, d, storedPoll)
			}
		}
		// While the rotator waits for its fourth poll, the cache catches up.
		d := r.clock.next(t)
		r.secrets.set(material{client: r.renewer.latest()})
		r.clock.Step(d)
		if d := r.clock.next(t); d != 0 {
			t.Errorf("once the cache shows it the rotator waits %s, want 0", d)
		}
		if n := len(r.renewer.obtained()); n != 1 {
			t.Errorf("obtained %d times, want 1", n)
		}
	})
	t.Run("it gives up after ten seconds and looks again", func(t *testing.T) {
		r := newRotatorRig(t, material{clientOK: &errMissing{}})
		r.renewer.hold = true
		r.start(t)
		polls := 0
		for r.clock.fire(t) == storedPoll {
			polls++
		}
		if polls != int(storedTimeout/storedPoll) {
			t.Errorf("%d polls, want %d", polls, storedTimeout/storedPoll)
		}
		if now := r.clock.Now(); !now.Equal(t0.Add(storedTimeout)) {
			t.Errorf("gave up at %s, want after %s", now.Sub(t0), storedTimeout)
		}
	})
}

func TestRotatorHoldsTheLeadingFlagWhileItRuns(t *testing.T) {
	for _, tc := range []struct {
		name           string
		leaderElection bool
		after          bool
	}{
		{"with leader election the flag is down again when the rotator stops", true, false},
		{"without leader election every replica stays the leader", false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRotatorRig(t, material{client: leaf(1, t0, time.Hour)})
			r.opts.LeaderElection = tc.leaderElection
			stop := r.start(t)
			r.clock.next(t)
			if !r.leading.Load() {
				t.Error("not leading while the rotator runs")
			}
			stop()
			if got := r.leading.Load(); got != tc.after {
				t.Errorf("leading after the rotator stopped = %v, want %v", got, tc.after)
			}
		})
	}
}

func equalDurations(a, b []time.Duration) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
