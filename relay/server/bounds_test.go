package server

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/pkg/pki"
	relayv1 "github.com/meshrelay/meshrelay/relay/api/v1"
)

func istioReport(policy, failure string) *relayv1.PushMessage {
	return &relayv1.PushMessage{Message: &relayv1.PushMessage_Status{Status: &relayv1.AgentStatus{
		IstioCa: &relayv1.IstioCAStatus{Policy: policy, NotBefore: 1, NotAfter: 2e9, RootSha256: "ab", Error: failure},
	}}}
}

func intermediateCSR(policy string, csr []byte) *relayv1.PushMessage {
	return &relayv1.PushMessage{Message: &relayv1.PushMessage_IntermediateCsr{IntermediateCsr: &relayv1.IntermediateCSR{Policy: policy, Csr: csr}}}
}

func TestPolicyNamesFromAgentsBecomeLabelsOnlyWhenThePolicyApplies(t *testing.T) {
	for _, tc := range []struct {
		name string
		msg  *relayv1.PushMessage
		// policy is the policy label cluster-1's Istio expiry carries
		// afterwards, "" for none; failures the series of
		// relay_istio_intermediate_failures_total; ignored the count of
		// unknown policy names.
		policy   string
		failures int
		ignored  float64
	}{
		{"a report under the policy that serves the cluster is kept with its name", istioReport("p", ""), "p", 0, 0},
		{"a report under a made-up policy is kept without its name", istioReport("made-up", ""), "", 0, 1},
		{"a failure under a made-up policy is not a failure series", istioReport("made-up", "forbidden"), "", 0, 1},
		{"a report under a policy that applies only to other clusters is kept without its name", istioReport("elsewhere", ""), "", 0, 1},
		{"a failure under the serving policy is counted under its name", istioReport("p", "forbidden"), "p", 1, 0},
		{"a CSR under a made-up policy is ignored before it is a label", intermediateCSR("made-up", []byte("junk")), "", 0, 1},
		{"a CSR under a policy that applies only to other clusters is ignored", intermediateCSR("elsewhere", []byte("junk")), "", 0, 1},
		{"a bad CSR under the serving policy is counted under its name", intermediateCSR("p", []byte("junk")), "", 1, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			svc := fuzzService(t)
			root, err := pki.NewRootCA(pki.Options{CommonName: "elsewhere-root", TTL: time.Hour})
			if err != nil {
				t.Fatal(err)
			}
			svc.trust.State.setPolicy(&trustPolicy{name: "elsewhere", signer: root, rootPEM: root.CAPEM(), rootSHA256: pki.Fingerprint(root.Cert), ttl: time.Hour, clusters: []string{"cluster-2"}})
			// The server asked cluster-1 for a CSR under p: only such a CSR is considered.
			svc.trust.State.awaitCSR("cluster-1", "p")
			svc.handlePush("cluster-1", tc.msg)

			var policy string
			if rec := svc.conns.clusters["cluster-1"]; rec != nil && rec.istio != nil {
				policy = rec.istio.policy
			}
			if policy != tc.policy {
				t.Errorf("Istio expiry labelled policy %q, want %q", policy, tc.policy)
			}
			if n := len(collected(t, svc.metrics.trustFailures)); n != tc.failures {
				t.Errorf("%d failure series, want %d", n, tc.failures)
			}
			if got := collected(t, svc.bounds.ignored)[`relay_push_messages_ignored_total{reason="unknown_policy"}`]; got != tc.ignored {
				t.Errorf("unknown policy names counted %v, want %v", got, tc.ignored)
			}
			for _, p := range svc.trust.Results.policies() {
				if p != "p" {
					t.Errorf("results pending under policy %q", p)
				}
			}
			if rep := svc.trust.State.reports["cluster-1"]; rep != nil && rep.GetPolicy() != tc.policy {
				t.Errorf("trust state keeps the report under policy %q, want %q", rep.GetPolicy(), tc.policy)
			}
		})
	}
}

func TestIgnoredNamesAreLoggedAtABoundedRate(t *testing.T) {
	now := time.Unix(1e9, 0)
	var lines []string
	log := funcr.New(func(prefix, args string) { lines = append(lines, args) }, funcr.Options{})
	cfg := config.DefaultServer()
	b := newAgentBounds(prometheus.NewRegistry(), &cfg, func() time.Time { return now }, log)
	for i := range 10000 {
		b.ignore("cluster-1", ignoredUnknownPolicy, "policy", fmt.Sprintf("made-up-%d", i))
	}
	if len(lines) != boundsLogBurst {
		t.Fatalf("%d lines logged for 10000 ignored names, want the burst of %d", len(lines), boundsLogBurst)
	}
	now = now.Add(boundsLogEvery)
	b.ignore("cluster-1", ignoredUnknownPolicy, "policy", "one-more")
	if len(lines) != boundsLogBurst+1 || !strings.Contains(lines[boundsLogBurst], fmt.Sprintf(`"unloggedSinceLast"=%d`, 10000-boundsLogBurst)) {
		t.Errorf("line after %s: %q, want one saying %d went unlogged", boundsLogEvery, lines[len(lines)-1], 10000-boundsLogBurst)
	}
	if got := collected(t, b.ignored)[`relay_push_messages_ignored_total{reason="unknown_policy"}`]; got != 10001 {
		t.Errorf("counted %v ignored names, want every one, 10001", got)
	}
}

func TestBucketsForgetIdleKeysOnlyOnceTheyWouldHaveRefilled(t *testing.T) {
	now := time.Unix(1e9, 0)
	slow := newBuckets(0.001, 2) // refills in 2000s, longer than peerIdle
	for range 2 {
		slow.allow("a", now)
	}
	now = now.Add(peerIdle + time.Minute)
	slow.allow("b", now)
	if slow.allow("a", now) {
		t.Error("an empty bucket was forgotten before it refilled, and its key got a new one")
	}
	fast := newBuckets(10, 100)
	fast.allow("a", now)
	now = now.Add(peerIdle + time.Minute)
	fast.allow("b", now)
	if n := fast.size(); n != 1 {
		t.Errorf("%d buckets kept after a key was idle for %s, want 1", n, peerIdle)
	}
}

func TestRenewIsLimitedPerClusterAndBootstrapPerPeer(t *testing.T) {
	now := time.Unix(0, 0)
	l := newSigningLimiter(8, 1, 1, func() time.Time { return now }).perCluster(0.01, 2)
	for _, cluster := range []string{"cluster-1", "cluster-1", "cluster-2", "cluster-2"} {
		release, err := l.acquireRenew(cluster)
		if err != nil {
			t.Fatalf("renew by %s within its burst: %v", cluster, err)
		}
		release()
	}
	_, err := l.acquireRenew("cluster-1")
	if st, _ := status.FromError(err); st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), "cluster cluster-1") || !strings.Contains(st.Message(), "clusterRenewRate") {
		t.Errorf("third renew by cluster-1: %v, want ResourceExhausted naming the cluster and clusterRenewRate", err)
	}
	if _, err := l.acquire("10.0.0.1"); err != nil {
		t.Errorf("a bootstrap from a peer after renewals: %v, want its own bucket", err)
	}
	if _, err := l.acquire("10.0.0.1"); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("a second bootstrap from that peer: %v, want ResourceExhausted", err)
	}
}

// collected returns the series c collects, as gathered does.
func collected(t *testing.T, c prometheus.Collector) map[string]float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	return gathered(t, reg)
}
