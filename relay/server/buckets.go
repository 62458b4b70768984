package server

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// peerIdle is how long a bucket is kept after its last use, at least.
const peerIdle = 10 * time.Minute

// buckets are token buckets by key (a peer address, a cluster), made full
// on a key's first use and forgotten once idle, so that the map holds only
// the keys seen in the last few minutes. A bucket is forgotten only after
// it would have refilled, so forgetting one never grants more than the
// rate. Safe for concurrent use.
type buckets struct {
	rate  rate.Limit
	burst int
	// idle is how long an unused bucket is kept: peerIdle, or the time the
	// bucket takes to refill when that is longer.
	idle time.Duration

	mu        sync.Mutex
	byKey     map[string]*bucket
	lastSweep time.Time
}

type bucket struct {
	limiter *rate.Limiter
	seen    time.Time
}

func newBuckets(perSecond float64, burst int) *buckets {
	idle := peerIdle
	if refill := time.Duration(float64(burst) / perSecond * float64(time.Second)); perSecond > 0 && refill > idle {
		idle = refill
	}
	return &buckets{rate: rate.Limit(perSecond), burst: burst, idle: idle, byKey: map[string]*bucket{}}
}

// allow takes a token from key's bucket at now and reports whether there
// was one.
func (b *buckets) allow(key string, now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	k, ok := b.byKey[key]
	if !ok {
		b.evictIdle(now)
		k = &bucket{limiter: rate.NewLimiter(b.rate, b.burst)}
		b.byKey[key] = k
	}
	k.seen = now
	return k.limiter.AllowN(now, 1)
}

// evictIdle forgets the buckets unused for idle. It sweeps at most once per
// half idle, so that many new keys do not each pay for a sweep. b.mu must
// be held.
func (b *buckets) evictIdle(now time.Time) {
	if now.Sub(b.lastSweep) < b.idle/2 {
		return
	}
	b.lastSweep = now
	for key, k := range b.byKey {
		if now.Sub(k.seen) > b.idle {
			delete(b.byKey, key)
		}
	}
}

// size returns how many buckets are kept.
func (b *buckets) size() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.byKey)
}
