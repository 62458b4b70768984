package server

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	relayv1 "github.com/meshrelay/meshrelay/relay/api/v1"
)

func TestBootstrapBucketsAreCappedAndKeyIPv6ByPrefix(t *testing.T) {
	now := time.Unix(1e9, 0)
	t.Run("addresses of one IPv6 /64 share a bucket; other /64s and IPv4 have their own", func(t *testing.T) {
		l := newSigningLimiter(8, 1, 1, func() time.Time { return now })
		for _, peer := range []string{"2001:db8:0:1::1", "2001:db8:0:2::1", "10.0.0.1", "::ffff:10.0.0.2"} {
			release, err := l.acquire(peer)
			if err != nil {
				t.Fatalf("first Bootstrap from %s: %v", peer, err)
			}
			release()
		}
		for _, peer := range []string{"2001:db8:0:1::2", "2001:db8:0:1:ffff:ffff:ffff:ffff", "10.0.0.2"} {
			_, err := l.acquire(peer)
			if st, _ := status.FromError(err); st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), "too many signing requests from "+peerKey(peer)) {
				t.Errorf("Bootstrap from %s after its prefix spent its bucket: %v, want ResourceExhausted naming %s", peer, err, peerKey(peer))
			}
		}
		if got := peerKey("2001:db8:0:1::2"); got != "2001:db8:0:1::/64" {
			t.Errorf("peerKey of an IPv6 address is %q, want its /64", got)
		}
	})
	t.Run("a full map refuses a new address until some bucket has refilled", func(t *testing.T) {
		// One Bootstrap a second, a burst of 2: a used bucket refills
		// within 2s.
		l := newSigningLimiter(8, 1, 2, func() time.Time { return now })
		for i := range maxPeerBuckets {
			release, err := l.acquire(fmt.Sprintf("2001:db8:%x::1", i))
			if err != nil {
				t.Fatalf("Bootstrap from /64 number %d of %d: %v", i, maxPeerBuckets, err)
			}
			release()
		}
		_, err := l.acquire("192.0.2.1")
		if st, _ := status.FromError(err); st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), fmt.Sprintf("from %d addresses, the most it keeps", maxPeerBuckets)) {
			t.Errorf("Bootstrap from a new address with %d buckets kept: %v, want ResourceExhausted saying the map is full", maxPeerBuckets, err)
		}
		if n := l.peers.size(); n != maxPeerBuckets {
			t.Errorf("%d buckets kept, want at most %d", n, maxPeerBuckets)
		}
		now = now.Add(2 * time.Second)
		if _, err := l.acquire("192.0.2.1"); err != nil {
			t.Errorf("Bootstrap from a new address once the other buckets refilled: %v", err)
		}
		if n := l.peers.size(); n != 1 {
			t.Errorf("%d buckets kept after the refilled ones were forgotten, want 1", n)
		}
	})
}

// TestBucketMapMemory measures what a full map of Bootstrap buckets costs.
func TestBucketMapMemory(t *testing.T) {
	now := time.Unix(1e9, 0)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	l := newSigningLimiter(8, 1, 2, func() time.Time { return now })
	for i := range 4 * maxPeerBuckets {
		if release, err := l.acquire(fmt.Sprintf("2001:db8:%x:%x::1", i>>16, i&0xffff)); err == nil {
			release()
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	used := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("%d /64s sprayed: %d buckets kept, heap %d KiB larger", 4*maxPeerBuckets, l.peers.size(), used>>10)
	if n := l.peers.size(); n > maxPeerBuckets {
		t.Errorf("%d buckets kept, want at most %d", n, maxPeerBuckets)
	}
	if used > 8<<20 {
		t.Errorf("heap grew by %d MiB for a capped map, want under 8", used>>20)
	}
	runtime.KeepAlive(l)
}

func TestBootstrapRefusalsAreLoggedAtABoundedRateWithoutTheRawClusterName(t *testing.T) {
	var lines []string
	svc := fuzzService(t)
	svc.log = funcr.New(func(prefix, args string) { lines = append(lines, args) }, funcr.Options{})
	// Every call comes in the same instant, however slow the machine.
	now := time.Unix(1e9, 0)
	svc.limiter = newSigningLimiter(1<<20, 1e9, 1<<20, func() time.Time { return now })
	long := strings.Repeat("x", 60<<10)
	const calls = 1000
	for i := range calls {
		cluster := long
		if i%2 == 1 {
			cluster = "cluster-1"
		}
		_, err := svc.Bootstrap(context.Background(), &relayv1.BootstrapRequest{Cluster: cluster, Token: "wrong"})
		if status.Code(err) == codes.OK || strings.Contains(status.Convert(err).Message(), long[:1024]) {
			t.Fatalf("Bootstrap %d: %v, want a refusal that does not echo the name", i, err)
		}
	}
	if len(lines) != refusalLogBurst {
		t.Errorf("%d lines logged for %d refused Bootstraps in an instant, want the burst of %d", len(lines), calls, refusalLogBurst)
	}
	now = now.Add(refusalLogEvery)
	if _, err := svc.Bootstrap(context.Background(), &relayv1.BootstrapRequest{Cluster: "cluster-1", Token: "wrong"}); err == nil {
		t.Fatal("a wrong token was accepted")
	}
	if want := fmt.Sprintf(`"unloggedSinceLast"=%d`, calls-refusalLogBurst); len(lines) != refusalLogBurst+1 || !strings.Contains(lines[len(lines)-1], want) {
		t.Errorf("the line %s later: %q, want one saying %s", refusalLogEvery, lines[len(lines)-1], want)
	}
	for _, l := range lines {
		if strings.Contains(l, long[:1024]) {
			t.Errorf("a log line holds the caller's %d-byte cluster name", len(long))
			break
		}
	}
	if got := collected(t, svc.metrics.refused); got[`relay_certificates_refused_total{call="bootstrap",reason="bad_request"}`]+got[`relay_certificates_refused_total{call="bootstrap",reason="token"}`] != calls+1 {
		t.Errorf("refusals counted %v, want every one of %d", got, calls+1)
	}
}
