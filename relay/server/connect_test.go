package server

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"runtime"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshrelay/meshrelay/internal/testenv"
	meshv1alpha1 "github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
	"github.com/meshrelay/meshrelay/pkg/config"
	relayv1 "github.com/meshrelay/meshrelay/relay/api/v1"
)

// TestConnect runs relay servers on a local cluster and holds Connect
// streams over mutual TLS, as relay-agent does, beside Push and Pull.
func TestConnect(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Names: []string{"mgmt"}})
	c := env.Clusters[0]
	f := startRelay(t, c, "gloo-mesh", func(cfg *config.Server) { cfg.MaxStreamsPerCluster = 100 })
	ctx := t.Context()
	status := func(version string) *relayv1.PushMessage {
		return &relayv1.PushMessage{Message: &relayv1.PushMessage_Status{Status: &relayv1.AgentStatus{AgentVersion: version, Replica: "agent-0"}}}
	}
	// connected opens a Connect stream on rc, sends a status and reads
	// the first instruction, as an agent does.
	connected := func(t *testing.T, rc relayv1.RelayClient, ctx context.Context) relayv1.Relay_ConnectClient {
		t.Helper()
		stream, err := rc.Connect(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.Send(status("v")); err != nil {
			t.Fatal(err)
		}
		if _, err := stream.Recv(); err != nil {
			t.Fatalf("first instruction: %v", err)
		}
		return stream
	}
	gauges := func(cluster string) string {
		return f.metric(`relay_push_clients_connected{cluster="`+cluster+`"}`) + "; " + f.metric(`relay_pull_clients_connected{cluster="`+cluster+`"}`)
	}

	t.Run("a Connect stream gets the trust bundle first, its status and instructions pass, and it counts as one push and one pull stream", func(t *testing.T) {
		f.register("cluster-1")
		sctx, cancel := context.WithCancel(ctx)
		defer cancel()
		stream, err := f.dial(f.clientCert("cluster-1")).Connect(sctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.Send(status("v-connect")); err != nil {
			t.Fatal(err)
		}
		first, err := stream.Recv()
		if err != nil {
			t.Fatalf("first instruction: %v", err)
		}
		if got, want := first.GetTrustBundle().GetCaCertificates(), f.secret(f.cfg.RootTLSSecret.Name).Data["ca.crt"]; !bytes.Equal(got, want) {
			t.Fatalf("first instruction %v, want the trust bundle of relay-root-tls-secret", first)
		}
		f.eventually("the stream is counted and its status handled", func() error {
			if g := gauges("cluster-1"); g != `relay_push_clients_connected{cluster="cluster-1"} 1; relay_pull_clients_connected{cluster="cluster-1"} 1` {
				return fmt.Errorf("gauges %s", g)
			}
			if v := f.srv.svc.conns.view("cluster-1"); v.push != 1 || v.pull != 1 || v.agentVersion != "v-connect" {
				return fmt.Errorf("status view: %d push, %d pull, agent version %q", v.push, v.pull, v.agentVersion)
			}
			return nil
		})
		for _, kind := range []string{"push", "pull"} {
			if m := f.metric(`relay_streams_opened_total{cluster="cluster-1",stream="` + kind + `"}`); testenv.MetricValue(m) != 1 {
				t.Errorf("%q, want 1 %s stream opened", m, kind)
			}
		}
		for i := range 3 {
			reason := fmt.Sprintf("test %d", i)
			if n := f.srv.svc.RenewNow("cluster-1", reason); n != 1 {
				t.Fatalf("RenewNow reached %d streams, want 1", n)
			}
			in, err := stream.Recv()
			if err != nil || in.GetRenewNow().GetReason() != reason {
				t.Fatalf("instruction %v, %v; want RenewNow %q", in, err, reason)
			}
		}
		f.eventually("no goroutine is left sending", func() error {
			if n := goroutinesIn("server.(*sender).drain("); n != 0 {
				return fmt.Errorf("%d goroutines in drain", n)
			}
			return nil
		})
		if err := stream.Send(status("v-connect-2")); err != nil {
			t.Fatal(err)
		}
		f.eventually("a later status is handled", func() error {
			if v := f.srv.svc.conns.view("cluster-1"); v.agentVersion != "v-connect-2" {
				return fmt.Errorf("agent version %q", v.agentVersion)
			}
			return nil
		})
		cancel()
		f.eventually("the gauges fall to 0 once the agent goes", func() error {
			if g := gauges("cluster-1"); g != `relay_push_clients_connected{cluster="cluster-1"} 0; relay_pull_clients_connected{cluster="cluster-1"} 0` {
				return fmt.Errorf("gauges %s", g)
			}
			return nil
		})
	})

	t.Run("an idle Connect stream holds one handler goroutine, where Push and Pull hold two", func(t *testing.T) {
		const agents = 10
		f.register("cluster-2")
		sctx, cancel := context.WithCancel(ctx)
		defer cancel()
		for range agents {
			connected(t, f.dial(f.clientCert("cluster-2")), sctx)
		}
		for range agents {
			rc := f.dial(f.clientCert("cluster-2"))
			push, err := rc.Push(sctx)
			if err != nil {
				t.Fatal(err)
			}
			if err := push.Send(status("v")); err != nil {
				t.Fatal(err)
			}
			pull, err := rc.Pull(sctx, &relayv1.PullRequest{Replica: "agent-0"})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := pull.Recv(); err != nil {
				t.Fatal(err)
			}
		}
		f.eventually("every stream is counted", func() error {
			if v := f.srv.svc.conns.view("cluster-2"); v.push != 2*agents || v.pull != 2*agents {
				return fmt.Errorf("%d push and %d pull streams, want %d of each", v.push, v.pull, 2*agents)
			}
			return nil
		})
		want := map[string]int{"(*service).Connect(": agents, "(*service).Push(": agents, "(*service).Pull(": agents, "(*sender).drain(": 0}
		// Eventually: handlers of streams an earlier test ended may still
		// be on their way out.
		f.eventually("one goroutine per Connect stream, one per Push and one per Pull stream", func() error {
			got := map[string]int{}
			for fn := range want {
				got[fn] = goroutinesIn("server." + fn)
			}
			if !maps.Equal(got, want) {
				return fmt.Errorf("goroutines by function %v, want %v", got, want)
			}
			return nil
		})
	})

	t.Run("a deregistered cluster's Connect stream ends with its connection, and its next one is refused with PermissionDenied", func(t *testing.T) {
		f.register("cluster-3")
		stream := connected(t, f.dial(f.clientCert("cluster-3")), ctx)
		kc := &meshv1alpha1.KubernetesCluster{ObjectMeta: metav1.ObjectMeta{Namespace: f.cfg.Namespace, Name: "cluster-3"}}
		if err := c.Client.Delete(ctx, kc); err != nil {
			t.Fatal(err)
		}
		// The handler's goroutine is blocked receiving: only closing the
		// connection ends it, so the reason comes with the next stream.
		if _, err := stream.Recv(); err == nil {
			t.Fatal("the stream of a deregistered cluster is still open")
		}
		again, err := f.dial(f.clientCert("cluster-3")).Connect(ctx)
		if err != nil {
			t.Fatal(err)
		}
		_, err = again.Recv()
		wantStatus(t, err, codes.PermissionDenied, "cluster cluster-3 is not registered")
	})

	t.Run("maxStreamsPerCluster counts a Connect stream as a push and a pull stream", func(t *testing.T) {
		capped := startRelay(t, c, "connect-cap", func(cfg *config.Server) { cfg.MaxStreamsPerCluster = 2 })
		capped.register("cluster-1")
		rc := capped.dial(capped.clientCert("cluster-1"))
		connected(t, rc, ctx) // within the cap
		pull, err := rc.Pull(ctx, &relayv1.PullRequest{Replica: "agent-1"})
		if err != nil {
			t.Fatal(err)
		}
		_, err = pull.Recv()
		wantStatus(t, err, codes.ResourceExhausted, "cluster cluster-1 has 2 streams open on this server replica (a Connect stream counts as two), and this one would pass the most it may (maxStreamsPerCluster 2)")
		again, err := rc.Connect(ctx)
		if err != nil {
			t.Fatal(err)
		}
		_, err = again.Recv()
		wantStatus(t, err, codes.ResourceExhausted, "(maxStreamsPerCluster 2)")
		if n := capped.srv.svc.conns.openStreams("cluster-1"); n != 2 {
			t.Errorf("cluster-1 counts %d streams, want 2 (the held Connect stream)", n)
		}
	})
}

// goroutinesIn counts the goroutines of this process whose stack holds a
// call of fn (such as "server.(*service).Connect(").
func goroutinesIn(fn string) int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	count := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, fn) {
			count++
		}
	}
	return count
}
