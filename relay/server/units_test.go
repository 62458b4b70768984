package server

import (
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/meshrelay/meshrelay/internal/scheme"
	"github.com/meshrelay/meshrelay/pkg/config"

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
	if _, ok := l.peers.byKey["10.0.0.1"]; ok {
		t.Error("an idle peer's bucket was kept")
	}
}

func TestConnectionsTrackStreamsAndDropThem(t *testing.T) {
	c := newConnections()
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	closed := 0
	push := c.open("a", pushStream, func() { closed++ }, nil)
	pull := c.open("a", pullStream, nil, nil)
	other := c.open("b", pullStream, nil, nil)
	c.setClientExpiry("a", 1700000000)
	want := func(series map[string]float64) {
		t.Helper()
		if got := gathered(t, reg); !maps.Equal(got, series) {
			t.Errorf("series\n%v\nwant\n%v", got, series)
		}
	}
	want(map[string]float64{
		`relay_push_clients_connected{cluster="a"}`:                      1,
		`relay_pull_clients_connected{cluster="a"}`:                      1,
		`relay_streams_opened_total{cluster="a",stream="push"}`:          1,
		`relay_streams_opened_total{cluster="a",stream="pull"}`:          1,
		`relay_client_certificate_expiry_timestamp_seconds{cluster="a"}`: 1700000000,
		`relay_push_clients_connected{cluster="b"}`:                      0,
		`relay_pull_clients_connected{cluster="b"}`:                      1,
		`relay_streams_opened_total{cluster="b",stream="push"}`:          0,
		`relay_streams_opened_total{cluster="b",stream="pull"}`:          1,
	})
	if n := c.drop("a"); n != 2 || closed != 1 {
		t.Errorf("drop = %d streams, connections closed %d, want 2 and 1", n, closed)
	}
	for _, s := range []*stream{push, pull} {
		if !s.wasDropped() {
			t.Errorf("%s stream not told of the drop", s.kind)
		}
	}
	if other.wasDropped() {
		t.Error("another cluster's stream was dropped")
	}
	if n := c.drop("a"); n != 2 || closed != 1 {
		t.Errorf("a second drop before the streams closed: %d streams, connections closed %d, want 2 and 1", n, closed)
	}
	c.close("a", push)
	c.close("a", push)
	c.close("a", pull)
	c.open("a", pushStream, nil, nil) // the agent reconnects
	// The dropped cluster's certificate expiry went with its registration:
	// it would otherwise alert for a certificate refused anyway.
	want(map[string]float64{
		`relay_push_clients_connected{cluster="a"}`:             1,
		`relay_pull_clients_connected{cluster="a"}`:             0,
		`relay_streams_opened_total{cluster="a",stream="push"}`: 2,
		`relay_streams_opened_total{cluster="a",stream="pull"}`: 1,
		`relay_push_clients_connected{cluster="b"}`:             0,
		`relay_pull_clients_connected{cluster="b"}`:             1,
		`relay_streams_opened_total{cluster="b",stream="push"}`: 0,
		`relay_streams_opened_total{cluster="b",stream="pull"}`: 1,
	})
}

// gathered returns every series reg collects as name{labels} and value.
func gathered(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			value := m.GetGauge().GetValue() + m.GetCounter().GetValue()
			out[f.GetName()+"{"+strings.Join(labels, ",")+"}"] = value
		}
	}
	return out
}

func TestInstructionsReachPullStreamsWithoutBlockingTheSender(t *testing.T) {
	c := newConnections()
	pull := c.open("a", pullStream, nil, nil)
	push := c.open("a", pushStream, nil, nil)
	defer c.close("a", push)
	in := &relayv1.Instruction{Instruction: &relayv1.Instruction_RenewNow{RenewNow: &relayv1.RenewNow{}}}
	for range instructionBuffer {
		if c.send("a", in) != 1 {
			t.Fatal("send within the queue not delivered to exactly the pull stream")
		}
	}
	if c.send("a", in) != 0 {
		t.Error("send to a full queue was counted")
	}
	if len(pull.instructions) != instructionBuffer {
		t.Errorf("queue holds %d", len(pull.instructions))
	}
	c.close("a", pull)
	if c.send("a", in) != 0 {
		t.Error("a closed pull stream still receives")
	}
}

func TestKeyringDecodesOnlyTheSecretsThatChanged(t *testing.T) {
	scheme, _ := scheme.Scheme()
	c := fake.NewClientBuilder().WithScheme(scheme).Build()
	cfg := config.DefaultServer()
	if err := EnsureCA(t.Context(), c, &cfg, logr.Discard()); err != nil {
		t.Fatal(err)
	}
	keys := newKeyring(&cfg, newMetrics(prometheus.NewRegistry()))
	load := func() {
		t.Helper()
		if err := keys.load(t.Context(), c, time.Now(), logr.Discard()); err != nil {
			t.Fatalf("load: %v", err)
		}
	}
	load()
	issuer, server := keys.issuer.Load(), keys.server.Load()
	if issuer == nil || server == nil || keys.token.Load() == nil || keys.roots.Load() == nil {
		t.Fatal("first load left material unset")
	}
	load()
	if keys.issuer.Load() != issuer || keys.server.Load() != server {
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
	if keys.issuer.Load() == issuer {
		t.Error("a changed signing secret was not decoded again")
	}
	if keys.server.Load() != server {
		t.Error("an unchanged server secret was decoded again")
	}
}

// TestRecordRefusesAStreamBeyondTheCapAndKeepsNoTraceOfIt: record adds
// streams up to max and refuses the next, which is not counted as opened.
func TestRecordRefusesAStreamBeyondTheCapAndKeepsNoTraceOfIt(t *testing.T) {
	c := newConnections()
	for i := range 2 {
		if open, ok := c.record("a", newStream(pushStream, nil, nil), 2); !ok || open != i {
			t.Fatalf("stream %d: recorded %v with %d open before, want recorded with %d", i+1, ok, open, i)
		}
	}
	refused := newStream(pullStream, nil, nil)
	if open, ok := c.record("a", refused, 2); ok || open != 2 {
		t.Fatalf("third stream: recorded %v with %d open, want refused with 2", ok, open)
	}
	if n := c.openStreams("a"); n != 2 {
		t.Errorf("%d streams open after the refusal, want 2", n)
	}
	if got := c.clusters["a"].opened; got != [2]uint64{2, 0} {
		t.Errorf("opened by kind %v, want [2 0]: a refused stream is not counted", got)
	}
	if _, ok := c.record("b", newStream(pullStream, nil, nil), 0); !ok {
		t.Error("max 0 must mean no cap")
	}
}
