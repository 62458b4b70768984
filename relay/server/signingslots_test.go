package server

import (
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestSigningSlotsAreShownAndNeverExceeded: the gauges say how many slots
// are held, the most ever held and how many there are; callers beyond the
// capacity are refused, so the peak never passes it even under a storm.
func TestSigningSlotsAreShownAndNeverExceeded(t *testing.T) {
	const capacity = 4
	l := newSigningLimiter(capacity, 1e9, 1e9, time.Now).perCluster(1e9, 1e9)
	reg := prometheus.NewRegistry()
	reg.MustRegister(l.collectors()...)
	gauge := func(name string) float64 {
		t.Helper()
		families, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range families {
			if f.GetName() == name {
				return f.GetMetric()[0].GetGauge().GetValue()
			}
		}
		t.Fatalf("no metric %s", name)
		return 0
	}
	inFlight := func() float64 { return gauge("relay_signing_in_flight") }
	peak := func() float64 { return gauge("relay_signing_in_flight_peak") }
	slots := gauge("relay_signing_capacity")
	if slots != capacity {
		t.Fatalf("relay_signing_capacity = %v, want %d", slots, capacity)
	}

	var releases []func()
	for range 2 {
		release, err := l.acquireRenew("cluster-1")
		if err != nil {
			t.Fatal(err)
		}
		releases = append(releases, release)
	}
	if inFlight() != 2 || peak() != 2 {
		t.Fatalf("two held: in flight %v, peak %v; want 2 and 2", inFlight(), peak())
	}
	releases[0]()
	if inFlight() != 1 || peak() != 2 {
		t.Fatalf("one released: in flight %v, peak %v; want 1 and 2", inFlight(), peak())
	}
	releases[1]()

	// A storm: many more callers than slots, each holding its slot a
	// moment. Every caller either holds a slot or is refused with
	// ResourceExhausted, and the peak stays at the capacity.
	var wg sync.WaitGroup
	var mu sync.Mutex
	held, refused := 0, 0
	for range 200 {
		wg.Go(func() {
			release, err := l.acquireRenew("cluster-1")
			if err != nil {
				if status.Code(err) != codes.ResourceExhausted {
					t.Errorf("refusal %v, want ResourceExhausted", err)
				}
				mu.Lock()
				refused++
				mu.Unlock()
				return
			}
			time.Sleep(time.Millisecond)
			mu.Lock()
			held++
			mu.Unlock()
			release()
		})
	}
	wg.Wait()
	if held == 0 || refused == 0 {
		t.Fatalf("the storm needs both outcomes: %d held, %d refused", held, refused)
	}
	if peak() != capacity {
		t.Errorf("peak %v after a storm of 200 over %d slots, want exactly %d", peak(), capacity, capacity)
	}
	if inFlight() != 0 {
		t.Errorf("in flight %v after every caller released, want 0", inFlight())
	}
}
