package server

import (
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// signingLimiter bounds Bootstrap and Renew: a Bootstrap takes a token from
// its peer address's bucket (the caller has no identity yet), a Renew from
// its cluster's (agents behind one NAT are not one bucket, and one cluster
// cannot spend another's), and a global cap bounds calls in flight. Each
// refuses at once with ResourceExhausted instead of queueing, so an
// overloaded server answers fast and agents back off.
type signingLimiter struct {
	slots chan struct{}
	now   func() time.Time
	// peers are Bootstrap's buckets, by peer address.
	peers *buckets
	// clusters are Renew's buckets, by cluster; nil leaves Renew bounded
	// by the global cap alone.
	clusters *buckets
}

func newSigningLimiter(maxInFlight int, perSecond float64, burst int, now func() time.Time) *signingLimiter {
	return &signingLimiter{
		slots: make(chan struct{}, maxInFlight),
		now:   now,
		peers: newBuckets(perSecond, burst),
	}
}

// perCluster gives each cluster's Renew calls a bucket of perSecond and
// burst, and returns l.
func (l *signingLimiter) perCluster(perSecond float64, burst int) *signingLimiter {
	l.clusters = newBuckets(perSecond, burst)
	return l
}

// acquire takes a slot for a Bootstrap from peer, or returns a
// ResourceExhausted status. The caller must call the returned release when
// its call ends.
func (l *signingLimiter) acquire(peer string) (release func(), err error) {
	if !l.peers.allow(peer, l.now()) {
		return nil, status.Errorf(codes.ResourceExhausted, "too many signing requests from %s: retry with backoff", peer)
	}
	return l.slot()
}

// acquireRenew takes a slot for a Renew by cluster, or returns a
// ResourceExhausted status that names the limit. The caller must call the
// returned release when its call ends.
func (l *signingLimiter) acquireRenew(cluster string) (release func(), err error) {
	if c := l.clusters; c != nil && !c.allow(cluster, l.now()) {
		return nil, status.Errorf(codes.ResourceExhausted,
			"too many Renew calls for cluster %s: at most %g per second with a burst of %d (clusterRenewRate, clusterRenewBurst); retry with backoff",
			cluster, float64(c.rate), c.burst)
	}
	return l.slot()
}

// slot takes one of the global slots, or refuses when none is free.
func (l *signingLimiter) slot() (release func(), err error) {
	select {
	case l.slots <- struct{}{}:
		return func() { <-l.slots }, nil
	default:
		return nil, status.Error(codes.ResourceExhausted, "server is signing at capacity: retry with backoff")
	}
}
