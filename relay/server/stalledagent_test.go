package server

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshrelay/meshrelay/internal/testenv"
	relayv1 "github.com/meshrelay/meshrelay/relay/api/v1"
)

// TestAnAgentThatStopsReadingIsDisconnected holds a pull stream (as agents
// before Connect open) and a Connect stream over mutual TLS that read the
// first instruction and then nothing more. The server's instructions fill
// HTTP/2's flow-control window, and its next send would wait for good,
// keeping the stream recorded: counted as connected and against
// maxStreamsPerCluster. The server closes such a connection once a send
// has waited the send timeout, and the cluster's streams are no longer
// counted.
func TestAnAgentThatStopsReadingIsDisconnected(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Names: []string{"mgmt"}})
	f := startRelay(t, env.Clusters[0], "gloo-mesh", nil)
	const timeout = 2 * time.Second
	f.srv.svc.bounds.sendTimeout.Store(int64(timeout))
	// An instruction of about 1 MiB: gRPC's client widens its window up
	// to 16 MiB as data arrives, whether or not the application reads,
	// and a few dozen such instructions fill it.
	reason := strings.Repeat("r", 1<<20)

	for _, shape := range []string{"pull", "connect"} {
		t.Run(shape, func(t *testing.T) {
			cluster := "stalled-" + shape
			f.register(cluster)
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			rc := f.dial(f.clientCert(cluster))
			var recv func() (*relayv1.Instruction, error)
			switch shape {
			case "pull":
				stream, err := rc.Pull(ctx, &relayv1.PullRequest{Replica: "agent-0"})
				if err != nil {
					t.Fatal(err)
				}
				recv = stream.Recv
			case "connect":
				stream, err := rc.Connect(ctx)
				if err != nil {
					t.Fatal(err)
				}
				st := &relayv1.AgentStatus{AgentVersion: "v", Replica: "agent-0"}
				if err := stream.Send(&relayv1.PushMessage{Message: &relayv1.PushMessage_Status{Status: st}}); err != nil {
					t.Fatal(err)
				}
				recv = stream.Recv
			}
			if _, err := recv(); err != nil {
				t.Fatalf("first instruction: %v", err)
			}
			testenv.Eventually(t, "the stream is recorded", 30*time.Second, func() error {
				if v := f.srv.svc.conns.view(cluster); v.pull != 1 {
					return fmt.Errorf("%d pull streams recorded", v.pull)
				}
				return nil
			})

			// The agent reads nothing more. Instructions are queued
			// until the server's send is stuck and its queue full; the
			// connection must then close within the send timeout (plus
			// the close grace), long before this wait ends.
			queued := 0
			testenv.Eventually(t, "the stalled agent's stream ends", 30*time.Second, func() error {
				queued += f.srv.svc.RenewNow(cluster, reason)
				if v := f.srv.svc.conns.view(cluster); v.pull != 0 || v.push != 0 {
					return fmt.Errorf("%d pull and %d push streams still recorded after %d instructions queued", v.pull, v.push, queued)
				}
				return nil
			})
			if queued == 0 {
				t.Fatal("no instruction was queued: the stream ended before the server had anything to send")
			}
			if g := f.metric(`relay_pull_clients_connected{cluster="` + cluster + `"}`); testenv.MetricValue(g) != 0 {
				t.Errorf("%q once the stream ended, want 0", g)
			}

			// The agent, reading again, gets what arrived before the
			// close and then an error: its connection is gone.
			var err error
			for range queued + 1 {
				if _, err = recv(); err != nil {
					break
				}
			}
			if err == nil || status.Code(err) == codes.OK {
				t.Fatalf("the agent's stream still delivers after %d instructions, want it closed", queued+1)
			}
			t.Logf("%d instructions queued; the agent's stream ended with: %v", queued, err)
		})
	}
}
