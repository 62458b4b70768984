package server

import (
	"context"
	"crypto/tls"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/testr"
	"google.golang.org/grpc/codes"

	"github.com/meshrelay/meshrelay/internal/testenv"
	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/pkg/pki"
	"github.com/meshrelay/meshrelay/pkg/relaysecret"
	relayv1 "github.com/meshrelay/meshrelay/relay/api/v1"
)

// madeUpNames is how many made-up policy names the agent sends.
const madeUpNames = 100_000

// maxHeapGrowth bounds how much the heap in use may grow, after garbage
// collection, while the server takes madeUpNames made-up names: 2 MiB,
// about 21 bytes a name. Keeping each name as a label would cost over
// 100 bytes a name, as a pending result or map key about as much.
const maxHeapGrowth = 2 << 20

// TestAgentBounds runs relay servers on a local cluster and connects to
// them over TLS as agents do, with client certificates from the servers'
// signing CAs.
func TestAgentBounds(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Names: []string{"mgmt"}})
	c := env.Clusters[0]

	t.Run("an agent sending 100,000 made-up policy names leaves the server's memory and series count flat", func(t *testing.T) {
		// The log is discarded: a test log keeps every line in memory, and
		// the server logs each status at V(1).
		f := startRelayWithLog(t, c, "bounds-names", logr.Discard(), func(cfg *config.Server) {
			cfg.ClusterPushRate, cfg.ClusterPushBurst = 1e9, madeUpNames*2
		})
		f.register("cluster-1")
		agent := f.dial(f.clientCert("cluster-1"))
		push, err := agent.Push(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if err := push.Send(&relayv1.PushMessage{Message: &relayv1.PushMessage_Status{Status: &relayv1.AgentStatus{AgentVersion: "test"}}}); err != nil {
			t.Fatal(err)
		}
		f.eventually("the push stream is open", func() error {
			if m := f.metric(`relay_push_clients_connected{cluster="cluster-1"}`); !strings.HasSuffix(m, " 1") {
				return fmt.Errorf("push gauge %q", m)
			}
			return nil
		})
		seriesBefore, heapBefore := f.seriesCount(), heapInUse()
		for i := range madeUpNames {
			name := fmt.Sprintf("made-up-%06d", i)
			msg := intermediateCSR(name, []byte("not a CSR"))
			if i%2 == 1 {
				msg = istioReport(name, "failure "+name)
			}
			if err := push.Send(msg); err != nil {
				t.Fatalf("send %d: %v", i, err)
			}
		}
		summary, err := push.CloseAndRecv()
		if err != nil || summary.GetReceived() != madeUpNames+1 {
			t.Fatalf("push summary %v, %v; want every message received (%d)", summary, err, madeUpNames+1)
		}
		seriesAfter, heapAfter := f.seriesCount(), heapInUse()
		t.Logf("series %d before, %d after; heap in use %d KiB before, %d KiB after", seriesBefore, seriesAfter, heapBefore>>10, heapAfter>>10)
		if seriesAfter != seriesBefore {
			t.Errorf("the server's series went from %d to %d: agent-sent names became labels", seriesBefore, seriesAfter)
		}
		if growth := int64(heapAfter) - int64(heapBefore); growth > maxHeapGrowth {
			t.Errorf("heap in use grew by %d KiB, more than %d KiB: the server keeps what agents send", growth>>10, maxHeapGrowth>>10)
		}
		if m := f.metric(`relay_push_messages_ignored_total{reason="unknown_policy"}`); testenv.MetricValue(m) != madeUpNames {
			t.Errorf("ignored names counted %q, want %d", m, madeUpNames)
		}
		body, _ := f.get("/metrics")
		if strings.Contains(body, "made-up-") {
			t.Error("/metrics shows a made-up policy name")
		}
	})

	f := startRelayWithLog(t, c, "bounds-limits", testr.New(t), func(cfg *config.Server) {
		cfg.ClusterPushRate, cfg.ClusterPushBurst = 0.001, 5
		cfg.ClusterRenewRate, cfg.ClusterRenewBurst = 0.001, 2
		cfg.PeerSigningRate, cfg.PeerSigningBurst = 0.001, 1
		cfg.MaxStreamsPerCluster = 2
	})
	for _, name := range []string{"cluster-1", "cluster-2", "cluster-3"} {
		f.register(name)
	}
	ctx := t.Context()

	t.Run("a push stream over its cluster's rate ends with ResourceExhausted, and reconnecting does not refill the bucket", func(t *testing.T) {
		agent := f.dial(f.clientCert("cluster-1"))
		msg := &relayv1.PushMessage{Message: &relayv1.PushMessage_Status{Status: &relayv1.AgentStatus{AgentVersion: "test"}}}
		push, err := agent.Push(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for range f.cfg.ClusterPushBurst + 1 {
			if err := push.Send(msg); err != nil {
				break // the server ended the stream; CloseAndRecv says why
			}
		}
		_, err = push.CloseAndRecv()
		wantStatus(t, err, codes.ResourceExhausted, "cluster cluster-1 sent push messages faster than 0.001 per second with a burst of 5 (clusterPushRate, clusterPushBurst)")

		again, err := agent.Push(ctx)
		if err != nil {
			t.Fatal(err)
		}
		_ = again.Send(msg)
		_, err = again.CloseAndRecv()
		wantStatus(t, err, codes.ResourceExhausted, "clusterPushRate")

		other, err := f.dial(f.clientCert("cluster-2")).Push(ctx)
		if err != nil {
			t.Fatal(err)
		}
		_ = other.Send(msg)
		if sum, err := other.CloseAndRecv(); err != nil || sum.GetReceived() != 1 {
			t.Errorf("another cluster's push: %v, %v; want its message received", sum, err)
		}
		if m := f.metric(`relay_stream_limits_exceeded_total{limit="push_rate"}`); testenv.MetricValue(m) != 2 {
			t.Errorf("push rate refusals %q, want 2", m)
		}
	})

	t.Run("a stream beyond maxStreamsPerCluster is ResourceExhausted until one closes", func(t *testing.T) {
		agent := f.dial(f.clientCert("cluster-3"))
		sctx, cancel := context.WithCancel(ctx)
		first, err := agent.Pull(sctx, &relayv1.PullRequest{Replica: "agent-0"})
		if err != nil {
			t.Fatal(err)
		}
		second, err := agent.Pull(ctx, &relayv1.PullRequest{Replica: "agent-1"})
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range []relayv1.Relay_PullClient{first, second} {
			if _, err := s.Recv(); err != nil {
				t.Fatalf("a stream within the cap: %v", err)
			}
		}
		third, err := agent.Pull(ctx, &relayv1.PullRequest{Replica: "agent-2"})
		if err != nil {
			t.Fatal(err)
		}
		_, err = third.Recv()
		wantStatus(t, err, codes.ResourceExhausted, "cluster cluster-3 has 2 streams open on this server replica (a Connect stream counts as two), and this one would pass the most it may (maxStreamsPerCluster 2)")
		if n := f.srv.svc.conns.openStreams("cluster-3"); n != 2 {
			t.Errorf("%d streams of cluster-3 recorded, want the refused one gone", n)
		}
		cancel()
		f.eventually("a stream opens once another closed", func() error {
			s, err := agent.Pull(ctx, &relayv1.PullRequest{Replica: "agent-2"})
			if err != nil {
				return err
			}
			_, err = s.Recv()
			return err
		})
	})

	t.Run("two clusters behind one address renew independently while one is limited", func(t *testing.T) {
		one, two := f.dial(f.clientCert("cluster-1")), f.dial(f.clientCert("cluster-2"))
		renew := func(rc relayv1.RelayClient, cluster string) error {
			key, _ := pki.GenerateKey(pki.ECDSAP256)
			csr, _ := pki.NewCSR(key, cluster)
			_, err := rc.Renew(ctx, &relayv1.RenewRequest{Csr: csr})
			return err
		}
		// peerSigningBurst is 1: were Renew limited by address, as
		// Bootstrap is, the second call from 127.0.0.1 would be refused.
		for range f.cfg.ClusterRenewBurst {
			if err := renew(one, "cluster-1"); err != nil {
				t.Fatalf("cluster-1 within its burst: %v", err)
			}
		}
		err := renew(one, "cluster-1")
		wantStatus(t, err, codes.ResourceExhausted, "too many Renew calls for cluster cluster-1: at most 0.001 per second with a burst of 2 (clusterRenewRate, clusterRenewBurst)")
		for range f.cfg.ClusterRenewBurst {
			if err := renew(two, "cluster-2"); err != nil {
				t.Errorf("cluster-2 from the same address while cluster-1 is limited: %v", err)
			}
		}
		if m := f.metric(`relay_certificates_refused_total{call="renew",reason="overload"}`); testenv.MetricValue(m) != 1 {
			t.Errorf("renewals refused %q, want 1", m)
		}
	})
}

// clientCert is a client certificate for cluster from the server's signing
// CA, as cert-manager would issue it.
func (f *relayFixture) clientCert(cluster string) *tls.Certificate {
	f.t.Helper()
	signing, err := certifiedFromSecret(relaysecret.Signing, f.secret(f.cfg.SigningTLSSecret.Name))
	if err != nil {
		f.t.Fatal(err)
	}
	issued, err := signing.IssueClient(pki.Options{DNSNames: []string{cluster}, TTL: time.Hour})
	if err != nil {
		f.t.Fatal(err)
	}
	keyPEM, _ := issued.KeyPEM()
	pair, err := tls.X509KeyPair(issued.CertPEM(), keyPEM)
	if err != nil {
		f.t.Fatal(err)
	}
	return &pair
}

// seriesCount is how many series the server's registry holds.
func (f *relayFixture) seriesCount() int {
	return len(gathered(f.t, f.srv.registry))
}

// heapInUse is the heap in use after garbage collection.
func heapInUse() uint64 {
	var m runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}
