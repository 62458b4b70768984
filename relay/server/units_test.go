package server

import (
	"context"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/pkg/kube"

	relayv1 "github.com/meshrelay/meshrelay/relay/api/v1"
)

func TestTokensCompare(t *testing.T) {
	for _, tc := range []struct {
		name              string
		presented, stored string
		want              bool
	}{
		{"the same token matches", "s3cret", "s3cret", true},
		{"another token does not match", "s3cres", "s3cret", false},
		{"a prefix does not match", "s3c", "s3cret", false},
		{"an empty stored token matches nothing", "", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tokensEqual([]byte(tc.presented), []byte(tc.stored)); got != tc.want {
				t.Errorf("tokensEqual = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestSigningLimiterRefusesAtOnceWhenOverloaded(t *testing.T) {
	now := time.Unix(0, 0)
	l := newSigningLimiter(2, 1, 2, func() time.Time { return now })
	r1, err := l.acquire("10.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.acquire("10.0.0.1"); err != nil {
		t.Fatalf("second call within the burst: %v", err)
	}
	_, err = l.acquire("10.0.0.1")
	if status.Code(err) != codes.ResourceExhausted {
		t.Errorf("third call from one peer: %v, want ResourceExhausted", err)
	}
	_, err = l.acquire("10.0.0.2")
	if st, _ := status.FromError(err); st.Code() != codes.ResourceExhausted || st.Message() != "server is signing at capacity: retry with backoff" {
		t.Errorf("a new peer while two calls are in flight: %v, want the global cap", err)
	}
	r1()
	if _, err := l.acquire("10.0.0.2"); err != nil {
		t.Errorf("after a release: %v", err)
	}
	now = now.Add(peerIdle + time.Minute)
	l.acquire("10.0.0.3")
	if _, ok := l.peers["10.0.0.1"]; ok {
		t.Error("an idle peer's bucket was kept")
	}
}

func TestConnectionsTrackStreamsAndDropThem(t *testing.T) {
	m := newMetrics(prometheus.NewRegistry())
	c := newConnections(m)
	ctx, cancel := context.WithCancel(context.Background())
	_, closePush := c.open("a", pushStream, cancel)
	_, closePull := c.open("a", pullStream, func() {})
	gauges := func() (float64, float64) {
		return testutil.ToFloat64(m.push.WithLabelValues("a")), testutil.ToFloat64(m.pull.WithLabelValues("a"))
	}
	if push, pull := gauges(); push != 1 || pull != 1 {
		t.Errorf("gauges push=%v pull=%v, want 1 and 1", push, pull)
	}
	if n := c.drop("a"); n != 2 || ctx.Err() == nil {
		t.Errorf("drop = %d, cancelled = %v", n, ctx.Err() != nil)
	}
	closePush()
	closePush()
	closePull()
	if push, pull := gauges(); push != 0 || pull != 0 {
		t.Errorf("closed streams still counted (or closed twice): push=%v pull=%v", push, pull)
	}
	if len(c.streams) != 0 {
		t.Errorf("closed streams still recorded: %v", c.streams)
	}
}

func TestInstructionsReachPullStreamsWithoutBlockingTheSender(t *testing.T) {
	c := newConnections(newMetrics(prometheus.NewRegistry()))
	ch, closePull := c.open("a", pullStream, func() {})
	_, closePush := c.open("a", pushStream, func() {})
	defer closePush()
	in := &relayv1.Instruction{Instruction: &relayv1.Instruction_RenewNow{RenewNow: &relayv1.RenewNow{}}}
	for range instructionBuffer {
		if c.send("a", in) != 1 {
			t.Fatal("send within the queue not delivered to exactly the pull stream")
		}
	}
	if c.send("a", in) != 0 {
		t.Error("send to a full queue was counted")
	}
	if len(ch) != instructionBuffer {
		t.Errorf("queue holds %d", len(ch))
	}
	closePull()
	if c.send("a", in) != 0 {
		t.Error("a closed pull stream still receives")
	}
}

func TestCredentialsDecodeOnlyTheSecretsThatChanged(t *testing.T) {
	scheme, _ := kube.Scheme()
	c := fake.NewClientBuilder().WithScheme(scheme).Build()
	cfg := config.DefaultServer()
	if err := EnsureCA(t.Context(), c, &cfg, logr.Discard()); err != nil {
		t.Fatal(err)
	}
	creds := newCredentials(&cfg, newMetrics(prometheus.NewRegistry()))
	load := func() {
		t.Helper()
		if err := creds.load(t.Context(), c, time.Now(), logr.Discard()); err != nil {
			t.Fatalf("load: %v", err)
		}
	}
	load()
	issuer, server := creds.issuer.Load(), creds.server.Load()
	if issuer == nil || server == nil || creds.token.Load() == nil || creds.roots.Load() == nil {
		t.Fatal("first load left material unset")
	}
	load()
	if creds.issuer.Load() != issuer || creds.server.Load() != server {
		t.Error("a load with no secret changed decoded the secrets again")
	}

	var signing corev1.Secret
	if err := c.Get(t.Context(), cfg.SigningTLSSecret.NamespacedName(cfg.Namespace), &signing); err != nil {
		t.Fatal(err)
	}
	signing.Labels = map[string]string{"touched": "true"}
	if err := c.Update(t.Context(), &signing); err != nil {
		t.Fatal(err)
	}
	load()
	if creds.issuer.Load() == issuer {
		t.Error("a changed signing secret was not decoded again")
	}
	if creds.server.Load() != server {
		t.Error("an unchanged server secret was decoded again")
	}
}
