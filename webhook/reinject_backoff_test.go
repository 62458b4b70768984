package webhook

import (
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"
)

// TestEvictionBackoffKeepsAMissingConfigurationFromChurningPods drives the
// backoff of the reinjector on a fake clock: pods that were there before an
// eviction go at once, a pod made again without the injection waits, each
// round twice as long up to the bound, and controllers back off apart.
func TestEvictionBackoffKeepsAMissingConfigurationFromChurningPods(t *testing.T) {
	start := time.Date(2026, 11, 27, 10, 0, 0, 500e6, time.UTC)
	now := start
	b := newEvictionBackoff(func() time.Time { return now })
	const rs, other = types.UID("rs"), types.UID("other")
	installed := start.Add(-10 * time.Second).Truncate(time.Second)

	if w := b.wait(rs, installed); w > 0 {
		t.Fatalf("a pod of a controller never evicted waits %s", w)
	}
	b.evicted(rs, installed)
	if b.again(rs, installed) || b.wait(rs, installed) > 0 {
		t.Error("the other pod made at install waits after its sibling's eviction")
	}
	b.evicted(rs, installed)

	// Made again in the second of the eviction, still without the injection.
	remade := now.Truncate(time.Second)
	if !b.again(rs, remade) {
		t.Fatal("a pod made after the eviction is not seen as made again")
	}
	if w := b.wait(rs, remade); w != firstEvictionBackoff {
		t.Errorf("wait = %s, want %s", w, firstEvictionBackoff)
	}
	if w := b.wait(other, installed); w > 0 {
		t.Errorf("another controller's pod waits %s", w)
	}
	for round, want := range []time.Duration{2 * firstEvictionBackoff, 4 * firstEvictionBackoff} {
		now = now.Add(b.wait(rs, remade))
		if w := b.wait(rs, remade); w > 0 {
			t.Fatalf("round %d: still waits %s after waiting", round, w)
		}
		b.evicted(rs, remade)
		remade = now.Add(time.Second).Truncate(time.Second)
		if w := b.wait(rs, remade); w != want {
			t.Errorf("round %d: wait = %s, want %s", round, w, want)
		}
	}
	for range 20 {
		now = now.Add(b.wait(rs, remade))
		b.evicted(rs, remade)
		remade = now.Add(time.Second).Truncate(time.Second)
	}
	if w := b.wait(rs, remade); w != maxEvictionBackoff {
		t.Errorf("after many rounds wait = %s, want the bound %s", w, maxEvictionBackoff)
	}

	// A controller whose last eviction is long past is forgotten.
	now = now.Add(3 * maxEvictionBackoff)
	b.evicted(other, now.Add(-time.Minute))
	if _, ok := b.last[rs]; ok {
		t.Error("a controller evicted long ago is still remembered")
	}
}
