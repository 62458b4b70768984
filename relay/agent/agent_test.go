package agent

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshrelay/meshrelay/internal/relayctl/fleet"
	"github.com/meshrelay/meshrelay/internal/testenv"
	meshv1alpha1 "github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/pkg/pki"
	"github.com/meshrelay/meshrelay/pkg/relaysecret"
	"github.com/meshrelay/meshrelay/relay/server"
)

const ns = "gloo-mesh"

type world struct {
	t        *testing.T
	mgmt     *testenv.Cluster
	workload *testenv.Cluster
	srv      *server.Server
	addr     string
	metrics  string
	edit     func(*config.Server)
	// stopServer stops the running relay server and waits for it.
	stopServer func()
}

// run starts r in the background and returns a function that stops it and
// waits; the test's cleanup calls it too.
func run(t *testing.T, name string, r func(context.Context) error) func() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("%s: %v", name, err)
				}
			case <-time.After(20 * time.Second):
				t.Errorf("%s did not stop within 20s", name)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func listen(t *testing.T) net.Listener {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func newWorld(t *testing.T, edit func(*config.Server)) *world {
	env := testenv.Start(t, testenv.Options{Names: []string{"mgmt", "workload"}})
	w := &world{t: t, mgmt: env.Cluster("mgmt"), workload: env.Cluster("workload")}
	for _, c := range env.Clusters {
		if err := c.Client.Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			t.Fatal(err)
		}
	}
	lis, mlis := listen(t), listen(t)
	w.addr, w.metrics = lis.Addr().String(), "http://"+mlis.Addr().String()
	w.edit = edit
	w.startServer(lis, mlis)
	return w
}

// startServer starts the relay server on the given listeners, or on the
// world's addresses when they are nil (a restart).
func (w *world) startServer(lis, mlis net.Listener) {
	t := w.t
	if lis == nil {
		var err error
		if lis, err = net.Listen("tcp", w.addr); err != nil {
			t.Fatal(err)
		}
		if mlis, err = net.Listen("tcp", strings.TrimPrefix(w.metrics, "http://")); err != nil {
			t.Fatal(err)
		}
	}
	cfg := config.DefaultServer()
	cfg.ClientCertificateTTL = metav1.Duration{Duration: time.Hour}
	if w.edit != nil {
		w.edit(&cfg)
	}
	srv, err := server.New(server.Options{Config: cfg, RESTConfig: w.mgmt.Config, Log: testr.New(t).WithName("mgmt"), Listener: lis, MetricsListener: mlis})
	if err != nil {
		t.Fatal(err)
	}
	w.srv = srv
	w.stopServer = run(t, "relay-server", srv.Run)
	w.eventually("the server is ready", func() error { return httpOK(w.metrics + "/readyz") })
}

func httpOK(url string) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%d: %s", resp.StatusCode, strings.TrimSpace(string(b)))
	}
	return nil
}

func (w *world) metric(prefix string) string {
	return testenv.ScrapeMetric(w.metrics+"/metrics", prefix)
}

func (w *world) eventually(what string, check func() error) {
	w.t.Helper()
	testenv.Eventually(w.t, what, 45*time.Second, check)
}

func (w *world) secret(c *testenv.Cluster, namespace, name string) (*corev1.Secret, error) {
	var s corev1.Secret
	err := c.Client.Get(w.t.Context(), types.NamespacedName{Namespace: namespace, Name: name}, &s)
	return &s, err
}

// copySecret copies keys of a management secret into the workload cluster,
// as relayctl register (or copying the token and root CA by hand) does.
func (w *world) copySecret(name, namespace string, keys ...string) {
	w.t.Helper()
	src, err := w.secret(w.mgmt, ns, name)
	if err != nil {
		w.t.Fatal(err)
	}
	dst := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name}, Data: map[string][]byte{}}
	for _, k := range keys {
		dst.Data[k] = src.Data[k]
	}
	if err := w.workload.Client.Create(w.t.Context(), dst); err != nil {
		w.t.Fatal(err)
	}
}

func (w *world) register(name string) {
	w.t.Helper()
	if err := w.mgmt.Client.Create(w.t.Context(), &meshv1alpha1.KubernetesCluster{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}); err != nil {
		w.t.Fatal(err)
	}
}

func (w *world) startAgent(cluster, namespace string, edit ...func(*config.Agent)) (*Agent, string) {
	w.t.Helper()
	a, url, _ := w.startAgentWithStop(cluster, namespace, edit...)
	return a, url
}

// startAgentWithStop starts an agent and also returns the function that
// stops it.
func (w *world) startAgentWithStop(cluster, namespace string, edit ...func(*config.Agent)) (*Agent, string, func()) {
	w.t.Helper()
	cfg := config.DefaultAgent()
	cfg.Cluster, cfg.Namespace, cfg.ServerAddress = cluster, namespace, w.addr
	cfg.ClientTLSSecretRotationGracePeriodRatio = 0.5
	for _, e := range edit {
		e(&cfg)
	}
	mlis := listen(w.t)
	replica := fmt.Sprintf("%s-%d", cluster, replicas.Add(1))
	a, err := New(Options{Config: cfg, RESTConfig: w.workload.Config, Log: testr.New(w.t).WithName(replica), MetricsListener: mlis, Replica: replica,
		Jitter: func() float64 { return 0 }})
	if err != nil {
		w.t.Fatal(err)
	}
	stop := run(w.t, "relay-agent "+replica, a.Run)
	return a, "http://" + mlis.Addr().String(), stop
}

// clientSerial returns the serial of the client certificate stored in the
// workload cluster, after checking it validates for cluster.
func (w *world) clientSerial(namespace, cluster string) (string, error) {
	s, err := w.secret(w.workload, namespace, "relay-client-tls-secret")
	if err != nil {
		return "", err
	}
	v, err := relaysecret.Load(relaysecret.Client, map[string][]byte{relaysecret.KeyTLSCert: s.Data["tls.crt"], relaysecret.KeyTLSKey: s.Data["tls.key"], relaysecret.KeyCACert: s.Data["ca.crt"]}, "", relaysecret.Context{Cluster: cluster, Now: time.Now()})
	if err != nil {
		return "", err
	}
	return v.Cert.SerialNumber.String(), nil
}

var replicas atomic.Int32

func (w *world) connected(cluster string) error { return w.connectedN(cluster, 1) }

// connectedN checks the server counts n push and n pull streams of cluster.
func (w *world) connectedN(cluster string, n int) error {
	for _, g := range []string{"relay_push_clients_connected", "relay_pull_clients_connected"} {
		if m := w.metric(g + `{cluster="` + cluster + `"}`); !strings.HasSuffix(m, fmt.Sprintf(" %d", n)) {
			return fmt.Errorf("%s = %q, want %d", g, m, n)
		}
	}
	return nil
}

func TestAgentBootstrapsRotatesAndReconnects(t *testing.T) {
	w := newWorld(t, nil)
	w.register("cluster-1")
	a, agentURL := w.startAgent("cluster-1", ns)

	t.Run("with no secrets the agent waits and names what is missing", func(t *testing.T) {
		w.eventually("readyz names the client secret", func() error {
			err := httpOK(agentURL + "/readyz")
			if err == nil || !strings.Contains(err.Error(), "no valid client certificate in secret gloo-mesh/relay-client-tls-secret") {
				return fmt.Errorf("readyz: %v", err)
			}
			return nil
		})
	})

	w.copySecret("relay-root-tls-secret", ns, "ca.crt")
	w.copySecret("relay-identity-token-secret", ns, "token")
	var first string
	t.Run("with the token and root it bootstraps, stores its secret and connects", func(t *testing.T) {
		w.eventually("the client secret validates", func() (err error) {
			first, err = w.clientSerial(ns, "cluster-1")
			return err
		})
		w.eventually("push and pull are connected", func() error { return w.connected("cluster-1") })
		if err := httpOK(agentURL + "/readyz"); err != nil {
			t.Errorf("agent readyz: %v", err)
		}
	})

	t.Run("a renewal asked by the server moves the streams to the new certificate without dropping them", func(t *testing.T) {
		opened := w.metric(`relay_streams_opened_total{cluster="cluster-1",stream="pull"}`)
		reconnects := testenv.ScrapeMetric(agentURL+"/metrics", "relay_agent_stream_reconnects_total")
		if n := w.srv.RenewNow("cluster-1", "test"); n != 1 {
			t.Fatalf("RenewNow reached %d agents", n)
		}
		w.eventually("the stored certificate changes", func() error {
			s, err := w.clientSerial(ns, "cluster-1")
			if err == nil && s == first {
				err = fmt.Errorf("serial still %s", s)
			}
			return err
		})
		w.eventually("the agent's provider holds the new certificate", func() error {
			cert := a.Provider().Current()
			if s, _ := w.clientSerial(ns, "cluster-1"); cert == nil || cert.Leaf.SerialNumber.String() != s {
				return fmt.Errorf("provider has another certificate")
			}
			return nil
		})
		if m := w.metric(`relay_certificates_issued_total{call="renew"}`); !strings.HasSuffix(m, " 1") {
			t.Errorf("renewals = %q, want 1", m)
		}
		// The streams move to a connection made with the new certificate,
		// opened before the old one closes: one more opening on the
		// server, no reconnect on the agent, and one stream of each kind
		// open throughout.
		w.eventually("the agent moves its streams once", func() error {
			if m := testenv.ScrapeMetric(agentURL+"/metrics", "relay_agent_stream_handovers_total"); !strings.HasSuffix(m, " 1") {
				return fmt.Errorf("handovers %q", m)
			}
			return nil
		})
		if again := testenv.ScrapeMetric(agentURL+"/metrics", "relay_agent_stream_reconnects_total"); again != reconnects {
			t.Errorf("the agent's streams dropped across the rotation: %q then %q", reconnects, again)
		}
		if again := w.metric(`relay_streams_opened_total{cluster="cluster-1",stream="pull"}`); again == opened {
			t.Errorf("the streams were not moved to a connection with the new certificate: still %q", again)
		}
		w.eventually("one push and one pull stream are open", func() error { return w.connected("cluster-1") })
	})

	t.Run("an expired certificate is replaced once relayctl register issues a fresh token, without a restart", func(t *testing.T) {
		signing, err := w.secret(w.mgmt, ns, "relay-tls-signing-secret")
		if err != nil {
			t.Fatal(err)
		}
		m, errs := relaysecret.Decode(relaysecret.Signing, signing.Data, "")
		if len(errs) > 0 {
			t.Fatal(errs)
		}
		var kc meshv1alpha1.KubernetesCluster
		if err := w.mgmt.Client.Get(t.Context(), types.NamespacedName{Namespace: ns, Name: "cluster-1"}, &kc); err != nil {
			t.Fatal(err)
		}
		// As relay-server issues it, bound to the cluster (so the agent's to
		// replace), and expired before it is stored.
		old, key := signBoundWithKey(t, m.Certified(), string(kc.UID), time.Now(), 2*time.Second)
		time.Sleep(time.Until(old.Cert.NotAfter.Add(time.Second)))
		s, _ := w.secret(w.workload, ns, "relay-client-tls-secret")
		s.Data["tls.crt"] = old.CertPEM
		s.Data["tls.key"], _ = pki.EncodePrivateKey(key)
		if err := w.workload.Client.Update(t.Context(), s); err != nil {
			t.Fatal(err)
		}
		// The shared token already bootstrapped cluster-1 once.
		w.eventually("the server refuses the spent shared token", func() error {
			if v := testenv.MetricValue(w.metric(`relay_certificates_refused_total{call="bootstrap",reason="shared_token"}`)); v < 1 {
				return fmt.Errorf("shared-token refusals = %v", v)
			}
			return nil
		})
		srv, ag := config.DefaultServer(), config.DefaultAgent()
		if _, err := fleet.Register(t.Context(), w.mgmt.Client, w.workload.Client, fleet.RegisterOptions{Name: "cluster-1", Server: &srv, Agent: &ag}); err != nil {
			t.Fatalf("relayctl register cluster-1: %v", err)
		}
		w.eventually("a valid certificate is back", func() error {
			_, err := w.clientSerial(ns, "cluster-1")
			return err
		})
		if m := w.metric(`relay_certificates_issued_total{call="bootstrap"}`); !strings.HasSuffix(m, " 2") {
			t.Errorf("bootstraps = %q, want 2 (with the shared token, then with the fresh one)", m)
		}
	})

	t.Run("a client certificate of another issuer is used and never renewed, even past its renewal time", func(t *testing.T) {
		signing, err := w.secret(w.mgmt, ns, "relay-tls-signing-secret")
		if err != nil {
			t.Fatal(err)
		}
		m, errs := relaysecret.Decode(relaysecret.Signing, signing.Data, "")
		if len(errs) > 0 {
			t.Fatal(errs)
		}
		// From the relay's own signing CA but not bound to the cluster,
		// as relayctl gen or a cert-manager CA issuer makes it, with no
		// annotation: 40 of its 60 seconds gone, past its renewal time at
		// the agent's ratio 0.5.
		theirs, err := m.Certified().IssueClient(pki.Options{DNSNames: []string{"cluster-1"}, TTL: time.Minute, Backdate: -1, Now: time.Now().Add(-40 * time.Second)})
		if err != nil {
			t.Fatal(err)
		}
		s, _ := w.secret(w.workload, ns, "relay-client-tls-secret")
		s.Data["tls.crt"] = theirs.CertPEM()
		s.Data["tls.key"], _ = theirs.KeyPEM()
		if err := w.workload.Client.Update(t.Context(), s); err != nil {
			t.Fatal(err)
		}
		w.eventually("the agent uses it", func() error {
			if cert := a.Provider().Current(); cert == nil || !cert.Leaf.Equal(theirs.Cert) {
				return fmt.Errorf("provider has another certificate")
			}
			return nil
		})
		if !a.watcher.managed.Load() {
			t.Error("the watcher does not report the certificate as left alone")
		}
		renewals := w.metric(`relay_certificates_issued_total{call="renew"}`)
		w.srv.RenewNow("cluster-1", "should be ignored")
		time.Sleep(3 * time.Second)
		if after, _ := w.secret(w.workload, ns, "relay-client-tls-secret"); string(after.Data["tls.crt"]) != string(theirs.CertPEM()) {
			t.Error("the agent replaced a client certificate of another issuer")
		}
		if again := w.metric(`relay_certificates_issued_total{call="renew"}`); again != renewals {
			t.Errorf("renewals %q then %q: the agent renewed a certificate of another issuer", renewals, again)
		}
	})

	t.Run("a client secret managed by cert-manager is never rotated", func(t *testing.T) {
		s, _ := w.secret(w.workload, ns, "relay-client-tls-secret")
		before, _ := w.clientSerial(ns, "cluster-1")
		if s.Annotations == nil {
			s.Annotations = map[string]string{}
		}
		s.Annotations["cert-manager.io/certificate-name"] = "relay-client"
		if err := w.workload.Client.Update(t.Context(), s); err != nil {
			t.Fatal(err)
		}
		w.eventually("the agent sees the annotation", func() error {
			if !a.watcher.managed.Load() {
				return fmt.Errorf("not marked managed")
			}
			return nil
		})
		w.srv.RenewNow("cluster-1", "should be ignored")
		time.Sleep(3 * time.Second)
		if after, _ := w.clientSerial(ns, "cluster-1"); after != before {
			t.Errorf("managed secret rotated: %s -> %s", before, after)
		}
	})
}

// TestAgentWithTheRootKeyIssuesItsOwnCertificate: an agent whose
// relay-root-tls-secret holds the root key issues its own client
// certificate, which relay-server admits only because clientIssuerSecret
// lists the root (issuer pinning refuses any other CA's).
func TestAgentWithTheRootKeyIssuesItsOwnCertificate(t *testing.T) {
	const issuers = "relay-client-issuers"
	w := newWorld(t, func(s *config.Server) { s.ClientIssuerSecret = issuers })
	root, err := w.secret(w.mgmt, ns, "relay-root-tls-secret")
	if err != nil {
		t.Fatal(err)
	}
	if err := w.mgmt.Client.Create(t.Context(), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: issuers},
		Data: map[string][]byte{relaysecret.KeyCACert: root.Data[relaysecret.KeyCACert]}}); err != nil {
		t.Fatal(err)
	}
	w.register("cluster-2")
	const other = "relay-selfissue"
	if err := w.workload.Client.Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: other}}); client.IgnoreAlreadyExists(err) != nil {
		t.Fatal(err)
	}
	w.copySecret("relay-root-tls-secret", other, "ca.crt", "tls.crt", "tls.key")
	w.startAgent("cluster-2", other)
	w.eventually("the self-issued client secret validates", func() error {
		_, err := w.clientSerial(other, "cluster-2")
		return err
	})
	w.eventually("it connects with it", func() error { return w.connected("cluster-2") })
	if m := w.metric(`relay_certificates_issued_total`); m != "" {
		t.Errorf("the server signed something (%q); the agent should have issued its own", m)
	}
}
