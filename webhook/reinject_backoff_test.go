package webhook

import (
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"
)

// TestEvictionBackoffKeepsAMissingConfigurationFromChurningPods drives the
// backoff of the reinjector on a fake clock: the pods a controller had when
// its first eviction happened go at once, whenever they were made; a pod
// made after it that still lacks the injection waits, each round twice as
// long up to the bound; controllers back off apart.
func TestEvictionBackoffKeepsAMissingConfigurationFromChurningPods(t *testing.T) {
	now := time.Date(2026, 11, 27, 10, 0, 0, 500e6, time.UTC)
	b := newEvictionBackoff(func() time.Time { return now })
	const rs, other = types.UID("rs"), types.UID("other")

	if w := b.wait(rs, "a"); w > 0 {
		t.Fatalf("a pod of a controller never evicted waits %s", w)
	}
	b.evicted(rs, "a", []types.UID{"a", "b"})
	if b.again(rs, "b") || b.wait(rs, "b") > 0 {
		t.Error("the sibling that was there at the first eviction waits")
	}
	b.evicted(rs, "b", []types.UID{"b", "a2"})

	// a2, made after the eviction of a, still without the injection.
	if !b.again(rs, "a2") {
		t.Fatal("a pod made after the eviction is not seen as made again")
	}
	if w := b.wait(rs, "a2"); w != firstEvictionBackoff {
		t.Errorf("wait = %s, want %s", w, firstEvictionBackoff)
	}
	if w := b.wait(other, "x"); w > 0 {
		t.Errorf("another controller's pod waits %s", w)
	}
	pod := types.UID("a2")
	for round, want := range []time.Duration{2 * firstEvictionBackoff, 4 * firstEvictionBackoff} {
		now = now.Add(b.wait(rs, pod))
		if w := b.wait(rs, pod); w > 0 {
			t.Fatalf("round %d: still waits %s after waiting", round, w)
		}
		b.evicted(rs, pod, []types.UID{pod})
		pod += "'"
		if w := b.wait(rs, pod); w != want {
			t.Errorf("round %d: wait = %s, want %s", round, w, want)
		}
	}
	for range 20 {
		now = now.Add(b.wait(rs, pod))
		b.evicted(rs, pod, []types.UID{pod})
		pod += "'"
	}
	if w := b.wait(rs, pod); w != maxEvictionBackoff {
		t.Errorf("after many rounds wait = %s, want the bound %s", w, maxEvictionBackoff)
	}

	// A controller whose last eviction is long past is forgotten.
	now = now.Add(3 * maxEvictionBackoff)
	b.evicted(other, "x", nil)
	if _, ok := b.last[rs]; ok {
		t.Error("a controller evicted long ago is still remembered")
	}
}
