package server

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// peerIdle is how long a bucket is kept after its last use, at least.
const peerIdle = 10 * time.Minute

// fullSweepEvery is how often, at most, capped buckets that are full look
// for buckets to forget: a caller spraying new keys at a full map makes
// one sweep per interval, not one per key.
const fullSweepEvery = time.Second

// buckets are token buckets by key (a peer address, a cluster), made full
// on a key's first use and forgotten once idle, so that the map holds only
// the keys seen in the last few minutes. A bucket is forgotten only after
// it would have refilled, so forgetting one never grants more than the
// rate. Capped buckets (capped) also bound how many keys they keep. Safe
// for concurrent use.
type buckets struct {
	rate  rate.Limit
	burst int
	// idle is how long an unused bucket is kept: peerIdle, or the time the
	// bucket takes to refill when that is longer.
	idle time.Duration
	// max, when above zero, is the most keys kept: a new key beyond it is
	// refused until some bucket has refilled.
	max int

	mu            sync.Mutex
	byKey         map[string]*bucket
	lastSweep     time.Time
	lastFullSweep time.Time
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

// capped makes b keep at most max keys, and returns b.
func (b *buckets) capped(max int) *buckets {
	b.max = max
	return b
}

// allow takes a token from key's bucket at now and reports whether there
// was one.
func (b *buckets) allow(key string, now time.Time) bool {
	ok, _ := b.take(key, now)
	return ok
}

// take is allow that also reports, when it refuses, whether it refused
// because b keeps its most keys and key is not one of them (full).
func (b *buckets) take(key string, now time.Time) (ok, full bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	k, ok := b.byKey[key]
	if !ok {
		b.evictIdle(now)
		if b.max > 0 && len(b.byKey) >= b.max && !b.evictRefilled(now) {
			return false, true
		}
		k = &bucket{limiter: rate.NewLimiter(b.rate, b.burst)}
		b.byKey[key] = k
	}
	k.seen = now
	return k.limiter.AllowN(now, 1), false
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

// evictRefilled makes room in full buckets by forgetting those that have
// refilled: a new bucket for their key would be the same, so forgetting
// them grants nothing. It sweeps at most once per fullSweepEvery and
// reports whether there is room. b.mu must be held.
func (b *buckets) evictRefilled(now time.Time) bool {
	if now.Sub(b.lastFullSweep) < fullSweepEvery {
		return false
	}
	b.lastFullSweep = now
	for key, k := range b.byKey {
		if k.limiter.TokensAt(now) >= float64(b.burst) {
			delete(b.byKey, key)
		}
	}
	return len(b.byKey) < b.max
}

// size returns how many buckets are kept.
func (b *buckets) size() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.byKey)
}
