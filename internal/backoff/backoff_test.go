package backoff

import (
	"math/rand/v2"
	"testing"
	"time"
)

func fixed(f float64) func() float64 { return func() float64 { return f } }

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

func TestBackoff(t *testing.T) {
	ms := func(n float64) time.Duration { return time.Duration(n * float64(time.Millisecond)) }
	for _, tc := range []struct {
		name           string
		initial, limit time.Duration
		random         float64
		want           []time.Duration
	}{
		{"delays double from one second and stop at one minute", time.Second, time.Minute, 0,
			[]time.Duration{ms(1000), ms(2000), ms(4000), ms(8000), ms(16000), ms(32000), ms(60000), ms(60000), ms(60000)}},
		{"delays double from half a second and stop at thirty seconds", 500 * time.Millisecond, 30 * time.Second, 0,
			[]time.Duration{ms(500), ms(1000), ms(2000), ms(4000), ms(8000), ms(16000), ms(30000), ms(30000)}},
		{"jitter adds its share of half of each delay, the capped ones too", 500 * time.Millisecond, 30 * time.Second, 0.5,
			[]time.Duration{ms(625), ms(1250), ms(2500), ms(5000), ms(10000), ms(20000), ms(37500), ms(37500)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := New(tc.initial, tc.limit, fixed(tc.random))
			var got []time.Duration
			for range tc.want {
				got = append(got, b.Step())
			}
			if !equalDurations(got, tc.want) {
				t.Errorf("delays %v, want %v", got, tc.want)
			}
		})
	}
}

func TestResetStartsFromTheFirstDelay(t *testing.T) {
	b := New(time.Second, time.Minute, fixed(0))
	for range 4 {
		b.Step()
	}
	b.Reset()
	if d := b.Step(); d != time.Second {
		t.Errorf("after Reset the delay is %s, want 1s", d)
	}
	if d := b.Step(); d != 2*time.Second {
		t.Errorf("and then %s, want 2s", d)
	}
}

func TestBackoffsWithTheirOwnDrawsDoNotMoveInLockstep(t *testing.T) {
	// Two agents that failed together, each with its own random source.
	a := New(time.Second, time.Minute, rand.New(rand.NewPCG(1, 2)).Float64)
	b := New(time.Second, time.Minute, rand.New(rand.NewPCG(3, 4)).Float64)
	base := time.Second
	for i := range 10 {
		da, db := a.Step(), b.Step()
		if da == db {
			t.Errorf("step %d: both agents wait %s", i, da)
		}
		for _, d := range []time.Duration{da, db} {
			if d < base || d > base+base/2 {
				t.Errorf("step %d: delay %s outside [%s, %s]", i, d, base, base+base/2)
			}
		}
		base = min(2*base, time.Minute)
	}
}
