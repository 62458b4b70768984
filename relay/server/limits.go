package server

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// signingLimiter bounds Bootstrap and Renew: each peer address gets its own
// token bucket, and a global cap bounds calls in flight. Both refuse at once
// with ResourceExhausted instead of queueing, so an overloaded server
// answers fast and agents back off.
type signingLimiter struct {
	slots chan struct{}
	rate  rate.Limit
	burst int
	now   func() time.Time

	mu    sync.Mutex
	peers map[string]*peerLimit
}

type peerLimit struct {
	limiter *rate.Limiter
	seen    time.Time
}

// peerIdle is how long a peer's bucket is kept after its last call.
const peerIdle = 10 * time.Minute

func newSigningLimiter(maxInFlight int, perSecond float64, burst int, now func() time.Time) *signingLimiter {
	return &signingLimiter{
		slots: make(chan struct{}, maxInFlight),
		rate:  rate.Limit(perSecond),
		burst: burst,
		now:   now,
		peers: map[string]*peerLimit{},
	}
}

// acquire takes a slot for peer, or returns a ResourceExhausted status.
// The caller must call the returned release when its call ends.
func (l *signingLimiter) acquire(peer string) (release func(), err error) {
	if !l.allow(peer) {
		return nil, status.Errorf(codes.ResourceExhausted, "too many signing requests from %s: retry with backoff", peer)
	}
	select {
	case l.slots <- struct{}{}:
		return func() { <-l.slots }, nil
	default:
		return nil, status.Error(codes.ResourceExhausted, "server is signing at capacity: retry with backoff")
	}
}

func (l *signingLimiter) allow(peer string) bool {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	p, ok := l.peers[peer]
	if !ok {
		l.evictIdle(now)
		p = &peerLimit{limiter: rate.NewLimiter(l.rate, l.burst)}
		l.peers[peer] = p
	}
	p.seen = now
	return p.limiter.AllowN(now, 1)
}

// evictIdle forgets peers not seen for peerIdle, so that the map stays
// bounded by the peers of the last few minutes.
func (l *signingLimiter) evictIdle(now time.Time) {
	for k, p := range l.peers {
		if now.Sub(p.seen) > peerIdle {
			delete(l.peers, k)
		}
	}
}
