package agent

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"maps"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	grpccreds "google.golang.org/grpc/credentials"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"
	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshrelay/meshrelay/internal/testenv"
	"github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/pkg/pki"
	"github.com/meshrelay/meshrelay/pkg/relaysecret"
	"github.com/meshrelay/meshrelay/pkg/trustbundle"
	"github.com/meshrelay/meshrelay/pkg/trustbundle/trustbundletest"
	relayv1 "github.com/meshrelay/meshrelay/relay/api/v1"
)

// trustRelay is a relay server on loopback for the trust and stream
// tests: TLS with a server certificate, asking for the agent's. Served
// with Connect (shapeConnect) it is today's relay-server; without
// (shapePushPull) it is an older one, whose service has no Connect method.
// Each Connect or pull stream gets the server's bundle when it opens, as
// relay-server sends it, and then what push sends; the statuses are
// recorded by replica.
type trustRelay struct {
	relayv1.UnimplementedRelayServer
	addr   string
	bundle []byte

	mu sync.Mutex
	// outs are the open Connect and pull streams, by id.
	outs map[int]*instructionStream
	next int
	// calls counts the calls the server received by method, the ones it
	// does not serve too; opened and open count the streams it served
	// and serves by method, and peak the most open at once.
	calls, opened, open, peak map[string]int
	// clients are the serials of the client certificates of the Connect
	// and pull streams, in the order they opened.
	clients []string
	// acks is the trust bundle each replica acknowledged last, and on the
	// method of the stream its last status came on.
	acks, on map[string]string
	// refuseConnect, when set, is Connect's answer.
	refuseConnect error
}

// instructionStream is an open Connect or pull stream as the server holds
// it: what push queues for it, and ended, which end closes.
type instructionStream struct {
	out   chan *relayv1.Instruction
	ended chan struct{}
}

func startTrustRelay(t *testing.T, cert *pki.Certified, bundle []byte, shape string) *trustRelay {
	t.Helper()
	pair, lis := servingOnLoopback(t, cert)
	s := &trustRelay{addr: lis.Addr().String(), bundle: bundle, outs: map[int]*instructionStream{},
		calls: map[string]int{}, opened: map[string]int{}, open: map[string]int{}, peak: map[string]int{}, acks: map[string]string{}, on: map[string]string{}}
	gs := grpc.NewServer(grpc.Creds(grpccreds.NewTLS(&tls.Config{Certificates: []tls.Certificate{pair}, ClientAuth: tls.RequireAnyClientCert, MinVersion: tls.VersionTLS12})),
		grpc.StatsHandler(callCounter{s}))
	desc := relayv1.Relay_ServiceDesc
	if shape == shapePushPull {
		desc.Streams = slices.DeleteFunc(slices.Clone(desc.Streams), func(d grpc.StreamDesc) bool { return d.StreamName == "Connect" })
	}
	gs.RegisterService(&desc, s)
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	return s
}

// callCounter counts every call the relay receives in its calls, by
// method: gRPC tags a call before it looks for the method.
type callCounter struct{ s *trustRelay }

func (c callCounter) TagRPC(ctx context.Context, info *stats.RPCTagInfo) context.Context {
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	c.s.calls[path.Base(info.FullMethodName)]++
	return ctx
}
func (callCounter) HandleRPC(context.Context, stats.RPCStats) {}
func (callCounter) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context {
	return ctx
}
func (callCounter) HandleConn(context.Context, stats.ConnStats) {}

// opening records a stream of method as open; for a Connect or pull
// stream (in) it returns the stream, its id and the serial of the client
// certificate on its connection.
func (s *trustRelay) opening(ctx context.Context, method string, in bool) (int, *instructionStream) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.opened[method]++
	s.open[method]++
	s.peak[method] = max(s.peak[method], s.open[method])
	if !in {
		return 0, nil
	}
	id := s.next
	s.next++
	st := &instructionStream{out: make(chan *relayv1.Instruction, 8), ended: make(chan struct{})}
	s.outs[id] = st
	// The peer's chain: here the agent's.
	if chain := serverChain(ctx); len(chain) > 0 {
		s.clients = append(s.clients, chain[0].SerialNumber.String())
	}
	return id, st
}

// closing records that the stream of method opening returned id for
// (for a Connect or pull stream) ended.
func (s *trustRelay) closing(method string, id int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.open[method]--
	delete(s.outs, id)
}

// instruct sends the bundle on st, then what push queues for it, until the
// stream's context ends, end ends it, or stop receives.
func (s *trustRelay) instruct(ctx context.Context, st *instructionStream, send func(*relayv1.Instruction) error, stop <-chan error) error {
	if err := send(bundleInstruction(s.bundle)); err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-st.ended:
			return nil
		case err := <-stop:
			return err
		case in := <-st.out:
			if err := send(in); err != nil {
				return err
			}
		}
	}
}

// receive records the statuses that recv brings, as on a stream of
// method, until the stream ends.
func (s *trustRelay) receive(method string, recv func() (*relayv1.PushMessage, error)) {
	for {
		msg, err := recv()
		if err != nil {
			return
		}
		if st := msg.GetStatus(); st != nil {
			s.mu.Lock()
			s.acks[st.GetReplica()] = st.GetTrustBundleSha256()
			s.on[st.GetReplica()] = method
			s.mu.Unlock()
		}
	}
}

func (s *trustRelay) Connect(stream grpc.BidiStreamingServer[relayv1.PushMessage, relayv1.Instruction]) error {
	s.mu.Lock()
	refuse := s.refuseConnect
	s.mu.Unlock()
	if refuse != nil {
		return refuse
	}
	id, st := s.opening(stream.Context(), "Connect", true)
	defer s.closing("Connect", id)
	// The agent closing its side ends the stream, as on relay-server.
	stop := make(chan error, 1)
	go func() {
		s.receive("Connect", stream.Recv)
		stop <- nil
	}()
	return s.instruct(stream.Context(), st, stream.Send, stop)
}

func (s *trustRelay) Pull(_ *relayv1.PullRequest, stream grpc.ServerStreamingServer[relayv1.Instruction]) error {
	id, st := s.opening(stream.Context(), "Pull", true)
	defer s.closing("Pull", id)
	return s.instruct(stream.Context(), st, stream.Send, nil)
}

func (s *trustRelay) Push(stream grpc.ClientStreamingServer[relayv1.PushMessage, relayv1.PushSummary]) error {
	s.opening(stream.Context(), "Push", false)
	defer s.closing("Push", -1)
	s.receive("Push", stream.Recv)
	return nil
}

// push sends in on every open Connect and pull stream.
func (s *trustRelay) push(in *relayv1.Instruction) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, st := range s.outs {
		st.out <- in
	}
}

// end ends every open Connect and pull stream, as a server does that
// stops (the handler returns).
func (s *trustRelay) end() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, st := range s.outs {
		close(st.ended)
		delete(s.outs, id)
	}
}

// streams returns how many Connect and pull streams were opened, and how
// many are open.
func (s *trustRelay) streams() (opened, open int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.opened["Connect"] + s.opened["Pull"], s.open["Connect"] + s.open["Pull"]
}

// counts returns copies of calls, opened, open and peak.
func (s *trustRelay) counts() (calls, opened, open, peak map[string]int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.calls), maps.Clone(s.opened), maps.Clone(s.open), maps.Clone(s.peak)
}

// ack returns the trust bundle replica acknowledged last.
func (s *trustRelay) ack(replica string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.acks[replica]
}

// statusOn returns the method of the stream replica's last status came on.
func (s *trustRelay) statusOn(replica string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.on[replica]
}

// clientSerials returns the serials of the client certificates of the
// Connect and pull streams, in the order they opened.
func (s *trustRelay) clientSerials() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.clients)
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// TestAgentTakesItsRootsFromTheTrustBundleFolderAndKeepsTheServersBundle
// runs two relay-agent replicas as the ServiceAccount of manifests/agent,
// with its RBAC as applied, against a relay server on loopback, with the
// trust bundle folder the Deployment mounts written the way the kubelet
// writes it: the agent is not ready while the folder holds no root; it
// connects once the folder holds the relay root; the bundle the server
// pushes is stored by the leader in relay-root-tls-secret and the
// ClusterTrustBundle and acknowledged, by the other replica only once its
// folder holds it; a root that joins the folder counts from the next
// handshake while the streams stay open; a bundle that does not verify
// the server is refused. The agent never reads relay-root-tls-secret,
// which its Role no longer allows.
func TestAgentTakesItsRootsFromTheTrustBundleFolderAndKeepsTheServersBundle(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Names: []string{"workload"}})
	c := env.Cluster("workload")
	ctx := t.Context()
	if err := c.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	env.MustKubectl(ctx, t, "", "--context", c.Name, "apply", "-f", filepath.Join(root, "manifests", "agent", "rbac.yaml"))
	const sa = "system:serviceaccount:" + ns + ":relay-agent"
	for verb, want := range map[string]string{"get": "no", "list": "no", "watch": "no", "patch": "yes"} {
		out, _, _ := env.Kubectl(ctx, "", "--context", c.Name, "auth", "can-i", verb, "secrets/relay-root-tls-secret", "-n", ns, "--as", sa)
		if strings.TrimSpace(out) != want {
			t.Errorf("relay-agent may %s relay-root-tls-secret: %q, want %s", verb, strings.TrimSpace(out), want)
		}
	}
	asAgent := rest.CopyConfig(c.Config)
	asAgent.Impersonate = rest.ImpersonationConfig{UserName: sa, Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"}}

	now := time.Now()
	relay := newRelayCA(t, "relay", now)
	next, extra := newTestRoot(t, "next"), newTestRoot(t, "extra")
	srv, err := relay.signing.IssueServer(pki.Options{DNSNames: []string{config.DefaultAuthority}, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	bundleA := pki.EncodeCertificates(relay.root.Cert)
	stub := startTrustRelay(t, srv, bundleA, shapePushPull)

	// The client certificate relay-server issued, stored without ca.crt
	// (kubectl create secret tls): only the folder's roots verify it.
	issued, key := signBoundWithKey(t, relay.signing, "0b5e8d1c-7a2f-4c3e-9d6b-1f2a3b4c5d6e", now, time.Hour)
	keyPEM, err := pki.EncodePrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Client.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: config.DefaultClientTLSSecret}, Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{relaysecret.KeyTLSCert: issued.CertPEM, relaysecret.KeyTLSKey: keyPEM}}); err != nil {
		t.Fatal(err)
	}

	dir := filepath.Join(t.TempDir(), "trust-bundle")
	project := func(files map[string][]byte) {
		t.Helper()
		if err := trustbundletest.WriteProjected(dir, files); err != nil {
			t.Fatal(err)
		}
	}
	project(map[string][]byte{"bundle.pem": nil})
	start := func(replica string) (*Agent, string) {
		t.Helper()
		cfg := config.DefaultAgent()
		cfg.Cluster, cfg.Namespace, cfg.ServerAddress, cfg.TrustBundleDir = "cluster-1", ns, stub.addr, dir
		cfg.ClientTLSSecretRotationGracePeriodRatio = 0.5
		mlis := listen(t)
		a, err := New(Options{Config: cfg, RESTConfig: asAgent, Log: testr.New(t).WithName(replica), MetricsListener: mlis, Replica: replica,
			Jitter: func() float64 { return 0 }})
		if err != nil {
			t.Fatal(err)
		}
		run(t, "relay-agent "+replica, a.Run)
		return a, "http://" + mlis.Addr().String()
	}
	eventually := func(what string, check func() error) {
		t.Helper()
		testenv.Eventually(t, what, 45*time.Second, check)
	}
	persisted := func(url string) float64 {
		return testenv.MetricValue(testenv.ScrapeMetric(url+"/metrics", `relay_agent_trust_bundle_updates_total{result="persisted"}`))
	}
	stored := func() (caCrt []byte, ctb []*x509.Certificate, err error) {
		var sec corev1.Secret
		if err := c.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: config.DefaultRootTLSSecret}, &sec); err != nil {
			return nil, nil, err
		}
		var b certificatesv1.ClusterTrustBundle
		if err := c.Client.Get(ctx, client.ObjectKey{Name: v1alpha1.TrustBundleName(ns)}, &b); err != nil {
			return nil, nil, err
		}
		if b.Spec.SignerName != v1alpha1.TrustBundleSignerName || b.Labels[v1alpha1.TrustBundleLabel] != ns {
			return nil, nil, fmt.Errorf("ClusterTrustBundle with signer %q and labels %v", b.Spec.SignerName, b.Labels)
		}
		roots, err := pki.DecodeCertificates([]byte(b.Spec.TrustBundle))
		return sec.Data[relaysecret.KeyCACert], roots, err
	}

	first, firstURL := start("agent-0")
	t.Run("with no root in the trust bundle folder the agent is not ready and says where roots come from", func(t *testing.T) {
		eventually("readyz names the folder", func() error {
			err := httpOK(firstURL + "/readyz")
			if err == nil || !strings.Contains(err.Error(), "trust bundle folder "+dir+" holds no certificate") {
				return fmt.Errorf("readyz: %v", err)
			}
			return nil
		})
	})

	t.Run("once the folder holds the relay root the agent connects with its certificate", func(t *testing.T) {
		project(map[string][]byte{"root-ca.crt": bundleA, "bundle.pem": nil})
		eventually("the agent is ready", func() error { return httpOK(firstURL + "/readyz") })
		eventually("a pull stream is open", func() error {
			if _, open := stub.streams(); open != 1 {
				return fmt.Errorf("%d pull streams open", open)
			}
			return nil
		})
	})

	t.Run("the leader stores the bundle the server pushes in the root secret and the ClusterTrustBundle, and acknowledges it", func(t *testing.T) {
		eventually("the bundle is stored", func() error {
			caCrt, ctb, err := stored()
			if err != nil {
				return err
			}
			if string(caCrt) != string(bundleA) || trustbundle.Fingerprint(ctb) != trustbundle.Fingerprint([]*x509.Certificate{relay.root.Cert}) {
				return fmt.Errorf("ca.crt %d bytes, ClusterTrustBundle of %d roots", len(caCrt), len(ctb))
			}
			return nil
		})
		eventually("agent-0 acknowledges it", func() error {
			if got := stub.ack("agent-0"); got != sha256Hex(bundleA) {
				return fmt.Errorf("acknowledged %q", got)
			}
			return nil
		})
		if n := persisted(firstURL); n < 1 {
			t.Errorf("agent-0 stored the bundle %v times, want at least once: it is the only replica, so the leader", n)
		}
	})

	_, secondURL := start("agent-1")
	bundleAC := append([]byte("# relay roots during a rotation\n"), pki.EncodeCertificates(relay.root.Cert, next.Cert)...)
	t.Run("the bundle the server pushes next is stored by the leader; the other replica acknowledges it once its folder holds it", func(t *testing.T) {
		eventually("agent-1 connects and acknowledges the bundle its folder already holds", func() error {
			if got := stub.ack("agent-1"); got != sha256Hex(bundleA) {
				return fmt.Errorf("acknowledged %q", got)
			}
			return nil
		})
		stub.push(bundleInstruction(bundleAC))
		eventually("the leader stores the new bundle and acknowledges it", func() error {
			caCrt, ctb, err := stored()
			if err != nil {
				return err
			}
			if string(caCrt) != string(bundleAC) || trustbundle.Fingerprint(ctb) != trustbundle.Fingerprint([]*x509.Certificate{relay.root.Cert, next.Cert}) {
				return fmt.Errorf("ca.crt %d bytes, ClusterTrustBundle of %d roots", len(caCrt), len(ctb))
			}
			if got := stub.ack("agent-0"); got != sha256Hex(bundleAC) {
				return fmt.Errorf("agent-0 acknowledged %q", got)
			}
			return nil
		})
		if got := stub.ack("agent-1"); got != sha256Hex(bundleA) {
			t.Errorf("agent-1 acknowledged %q before its folder held the new bundle, want still the first", got)
		}
		if n := persisted(secondURL); n != 0 {
			t.Errorf("agent-1, not the leader, stored a bundle %v times", n)
		}
		project(map[string][]byte{"root-ca.crt": bundleAC, "bundle.pem": pki.EncodeCertificates(next.Cert, relay.root.Cert)})
		eventually("agent-1 acknowledges the new bundle", func() error {
			if got := stub.ack("agent-1"); got != sha256Hex(bundleAC) {
				return fmt.Errorf("acknowledged %q", got)
			}
			return nil
		})
	})

	t.Run("a root that joins the folder counts from the next handshake, and the open streams stay", func(t *testing.T) {
		other, _ := recordingStubRelay(t, serverOf(t, extra))
		cfg := first.cfg
		cfg.ServerAddress = other
		handshake := func() error {
			conn, err := dial(&cfg, first.roots.Get, first.provider)
			if err != nil {
				return err
			}
			defer conn.Close()
			rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			_, err = relayv1.NewRelayClient(conn).Renew(rctx, &relayv1.RenewRequest{})
			if status.Code(err) == codes.Unimplemented {
				return nil
			}
			return err
		}
		if err := handshake(); err == nil || !strings.Contains(err.Error(), "does not verify") {
			t.Fatalf("handshake with a server of a root outside the anchors: %v, want refused", err)
		}
		opened, _ := stub.streams()
		project(map[string][]byte{"root-ca.crt": bundleAC, "bundle.pem": pki.EncodeCertificates(relay.root.Cert, next.Cert, extra.Cert)})
		eventually("the new root's expiry is exported", func() error {
			if m := testenv.ScrapeMetric(firstURL+"/metrics", `relay_agent_trust_root_expiry_timestamp_seconds{sha256="`+pki.Fingerprint(extra.Cert)+`"}`); m == "" {
				return fmt.Errorf("no series for the new root")
			}
			return nil
		})
		if err := handshake(); err != nil {
			t.Errorf("handshake with the new root in the folder: %v", err)
		}
		if again, open := stub.streams(); again != opened || open != 2 {
			t.Errorf("pull streams opened %d then %d, %d open: want none reopened and both open", opened, again, open)
		}
	})

	t.Run("a bundle that does not verify the server it came from is refused", func(t *testing.T) {
		stub.push(bundleInstruction(pki.EncodeCertificates(next.Cert)))
		eventually("both replicas refuse it", func() error {
			for _, url := range []string{firstURL, secondURL} {
				if v := testenv.MetricValue(testenv.ScrapeMetric(url+"/metrics", `relay_agent_trust_bundle_updates_total{result="refused"}`)); v != 1 {
					return fmt.Errorf("%s refused %v bundles", url, v)
				}
			}
			return nil
		})
		caCrt, _, err := stored()
		if err != nil || string(caCrt) != string(bundleAC) {
			t.Errorf("root secret ca.crt changed (%d bytes, %v) after a refused bundle", len(caCrt), err)
		}
		for _, r := range []string{"agent-0", "agent-1"} {
			if got := stub.ack(r); got != sha256Hex(bundleAC) {
				t.Errorf("%s acknowledged %q after a refused bundle, want the last good one", r, got)
			}
		}
	})
}
