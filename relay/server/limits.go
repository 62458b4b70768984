package server

import (
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// maxPeerBuckets is the most peer addresses (IPv6: /64 prefixes) whose
// Bootstrap buckets are kept. A Bootstrap from another address while
// that many buckets are in use, none of them refilled, is refused: a
// caller spraying source addresses costs a bounded map (about 3 MiB), not
// the server's memory.
const maxPeerBuckets = 16384

// Bootstrap refusals are logged at most refusalLogBurst lines at once
// and one line per refusalLogEvery after that: anyone who can reach the
// port can make the server refuse.
const (
	refusalLogEvery = time.Second
	refusalLogBurst = 10
)

// signingLimiter bounds Bootstrap and Renew: a Bootstrap takes a token from
// its peer address's bucket (the caller has no identity yet), a Renew from
// its cluster's (agents behind one NAT are not one bucket, and one cluster
// cannot spend another's), and a global cap bounds calls in flight. Each
// refuses at once with ResourceExhausted instead of queueing, so an
// overloaded server answers fast and agents back off.
type signingLimiter struct {
	slots chan struct{}
	// peak is the most slots ever held at once.
	peak atomic.Int64
	now  func() time.Time
	// peers are Bootstrap's buckets, by peer address.
	peers *buckets
	// clusters are Renew's buckets, by cluster; nil leaves Renew bounded
	// by the global cap alone.
	clusters *buckets
	// refusals logs the refused Bootstrap calls at a bounded rate.
	refusals *limitedLog
}

func newSigningLimiter(maxInFlight int, perSecond float64, burst int, now func() time.Time) *signingLimiter {
	return &signingLimiter{
		slots:    make(chan struct{}, maxInFlight),
		now:      now,
		peers:    newBuckets(perSecond, burst).capped(maxPeerBuckets),
		refusals: newLimitedLog(refusalLogEvery, refusalLogBurst, now),
	}
}

// peerKey is the bucket a Bootstrap from host takes from: the address for
// IPv4, its /64 for IPv6, since one site usually holds a whole /64 and
// could otherwise give every call an address of its own.
func peerKey(host string) string {
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	ip = ip.WithZone("").Unmap()
	if ip.Is4() {
		return ip.String()
	}
	p, err := ip.Prefix(64)
	if err != nil {
		return host
	}
	return p.String()
}

// perCluster gives each cluster's Renew calls a bucket of perSecond and
// burst, and returns l.
func (l *signingLimiter) perCluster(perSecond float64, burst int) *signingLimiter {
	l.clusters = newBuckets(perSecond, burst)
	return l
}

// acquire takes a slot for a Bootstrap from peer (its peerKey's bucket),
// or returns a ResourceExhausted status. The caller must call the
// returned release when its call ends.
func (l *signingLimiter) acquire(peer string) (release func(), err error) {
	key := peerKey(peer)
	switch ok, full := l.peers.take(key, l.now()); {
	case full:
		return nil, status.Errorf(codes.ResourceExhausted, "the server is tracking signing requests from %d addresses, the most it keeps, and none has been quiet long enough to be forgotten: retry with backoff", maxPeerBuckets)
	case !ok:
		return nil, status.Errorf(codes.ResourceExhausted, "too many signing requests from %s: retry with backoff", key)
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
		n := int64(len(l.slots))
		for p := l.peak.Load(); n > p; p = l.peak.Load() {
			if l.peak.CompareAndSwap(p, n) {
				break
			}
		}
		return func() { <-l.slots }, nil
	default:
		return nil, status.Error(codes.ResourceExhausted, "server is signing at capacity: retry with backoff")
	}
}

// collectors are the gauges of l's global slots: in use now, the most
// ever in use at once, and how many there are (--max-concurrent-signing).
// A renewal storm is within the signing budget while the peak is at most
// the capacity.
func (l *signingLimiter) collectors() []prometheus.Collector {
	return []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "relay_signing_in_flight",
			Help: "Bootstrap and Renew calls holding one of the signing slots now.",
		}, func() float64 { return float64(len(l.slots)) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "relay_signing_in_flight_peak",
			Help: "The most Bootstrap and Renew calls that held a signing slot at once since relay-server started.",
		}, func() float64 { return float64(l.peak.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "relay_signing_capacity",
			Help: "Signing slots (maxConcurrentSigning): Bootstrap and Renew calls beyond them are refused with ResourceExhausted.",
		}, func() float64 { return float64(cap(l.slots)) }),
	}
}
