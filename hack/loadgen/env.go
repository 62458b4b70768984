package main

import (
	"context"
	"crypto/x509"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/meshrelay/meshrelay/internal/procstat"
	"github.com/meshrelay/meshrelay/internal/scheme"
	"github.com/meshrelay/meshrelay/internal/testenv"
	meshv1alpha1 "github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
	"github.com/meshrelay/meshrelay/pkg/pki"
	"github.com/meshrelay/meshrelay/pkg/relaysecret"
)

const namespace = "gloo-mesh"

// environment is a local cluster with a relay-server process.
type environment struct {
	dir     string
	api     *envtest.Environment
	client  client.WithWatch
	server  *testenv.Process
	addr    string
	metrics string
	// serverBin, kubeconfig and serverArgs start relay-server again (a
	// restart, a replica); starts counts the processes started, to name
	// their logs.
	serverBin  string
	kubeconfig string
	serverArgs []string
	starts     int
	// profileDir keeps the server's heap profiles after the run.
	profileDir string

	// registered is how many KubernetesClusters register created.
	registered int

	token   string
	roots   *x509.CertPool
	signing *pki.Certified
}

func startEnvironment(ctx context.Context, serverBin string) (*environment, error) {
	if _, err := os.Stat(serverBin); err != nil {
		return nil, fmt.Errorf("relay-server binary %s: %w (run make build)", serverBin, err)
	}
	assets, err := testenv.AssetsDir()
	if err != nil {
		return nil, err
	}
	if err := testenv.CheckAssets(assets, testenv.Etcd, testenv.KubeAPIServer); err != nil {
		return nil, err
	}
	root, err := testenv.RepoRoot()
	if err != nil {
		return nil, err
	}
	scheme, err := scheme.Scheme()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "loadgen-")
	if err != nil {
		return nil, err
	}
	e := &environment{dir: dir, serverBin: serverBin, api: &envtest.Environment{
		BinaryAssetsDirectory: assets,
		CRDDirectoryPaths:     []string{filepath.Join(root, "manifests", "crds")},
		ErrorIfCRDPathMissing: true,
		Scheme:                scheme,
	}}
	if _, err := e.api.Start(); err != nil {
		return nil, fmt.Errorf("failed to start the local cluster: %w", err)
	}
	admin, err := e.api.AddUser(envtest.User{Name: "loadgen", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		e.stop()
		return nil, err
	}
	cfg := admin.Config()
	cfg.QPS, cfg.Burst = 1000, 2000
	if e.client, err = client.NewWithWatch(cfg, client.Options{Scheme: scheme}); err != nil {
		e.stop()
		return nil, err
	}
	e.kubeconfig = filepath.Join(dir, "kubeconfig")
	if err := testenv.WriteKubeconfig(e.kubeconfig, "loadgen", cfg); err != nil {
		e.stop()
		return nil, err
	}
	if err := e.client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}); err != nil {
		e.stop()
		return nil, err
	}
	if e.addr, err = testenv.FreeAddr(); err == nil {
		e.metrics, err = testenv.FreeAddr()
	}
	if err != nil {
		e.stop()
		return nil, err
	}
	// Bootstrap throughput is measured beyond the per-address rate a
	// real fleet behind one address would meet.
	e.serverArgs = []string{"--peer-signing-rate", "1000000", "--peer-signing-burst", "1000000", "--max-concurrent-signing", "1024"}
	if e.server, err = e.startServer(ctx, mainReplica, e.addr, e.metrics, e.serverArgs...); err != nil {
		e.stop()
		return nil, err
	}
	if err := e.loadSecrets(ctx); err != nil {
		e.stop()
		return nil, err
	}
	return e, nil
}

// mainReplica is the name (POD_NAME) of the relay-server every phase
// measures; the failover phase starts two more beside it.
const mainReplica = "relay-server-0"

// startServer starts relay-server replica name listening on addr, with
// its metrics (and profiles) on metrics and the arguments extra, and waits
// until it is ready.
func (e *environment) startServer(ctx context.Context, name, addr, metrics string, extra ...string) (*testenv.Process, error) {
	p, err := e.launchServer(name, addr, metrics, extra...)
	if err != nil {
		return nil, err
	}
	if err := testenv.WaitReady(ctx, p, "http://"+metrics+"/readyz", 2*time.Minute); err != nil {
		_ = p.Kill()
		return nil, err
	}
	return p, nil
}

// launchServer is startServer without the wait.
func (e *environment) launchServer(name, addr, metrics string, extra ...string) (*testenv.Process, error) {
	e.starts++
	args := append([]string{"--kubeconfig", e.kubeconfig, "--namespace", namespace,
		"--listen-address", addr, "--metrics-address", metrics, "--enable-profiling"}, extra...)
	return testenv.StartProcessEnv(e.serverBin, filepath.Join(e.dir, fmt.Sprintf("%s-%d.log", name, e.starts)), []string{"POD_NAME=" + name}, args...)
}

// restartServer stops the main relay-server with SIGTERM, as a rollout
// does, and starts it again on the same addresses with the arguments
// extra (nil: those it had), waiting until it is ready.
func (e *environment) restartServer(ctx context.Context, extra []string) error {
	if err := e.server.Stop(); err != nil {
		return err
	}
	if extra != nil {
		e.serverArgs = extra
	}
	p, err := e.startServer(ctx, mainReplica, e.addr, e.metrics, e.serverArgs...)
	if err != nil {
		e.server = nil
		return err
	}
	e.server = p
	return nil
}

func (e *environment) loadSecrets(ctx context.Context) error {
	get := func(name string) (*corev1.Secret, error) {
		var s corev1.Secret
		err := e.client.Get(ctx, types.NamespacedName{Namespace: namespace, Name: name}, &s)
		return &s, err
	}
	tok, err := get("relay-identity-token-secret")
	if err != nil {
		return err
	}
	e.token = string(tok.Data["token"])
	root, err := get("relay-root-tls-secret")
	if err != nil {
		return err
	}
	e.roots = x509.NewCertPool()
	e.roots.AppendCertsFromPEM(root.Data["ca.crt"])
	signing, err := get("relay-tls-signing-secret")
	if err != nil {
		return err
	}
	m, errs := relaysecret.Decode(relaysecret.Signing, signing.Data, "")
	if len(errs) > 0 {
		return fmt.Errorf("signing secret: %s", relaysecret.Message(errs))
	}
	e.signing = m.Certified()
	return nil
}

// register makes sure KubernetesClusters agent-0 … agent-(n-1) exist,
// creating those the environment has not registered yet.
func (e *environment) register(ctx context.Context, n, concurrency int) error {
	from := e.registered
	if n <= from {
		return nil
	}
	start := time.Now()
	err := forEach(ctx, n-from, concurrency, func(i int) error {
		return e.client.Create(ctx, &meshv1alpha1.KubernetesCluster{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: agentName(from + i)}})
	})
	if err != nil {
		return fmt.Errorf("failed to register clusters: %w", err)
	}
	e.registered = n
	fmt.Printf("registered %d KubernetesClusters in %s\n", n-from, time.Since(start).Round(time.Millisecond))
	return nil
}

func agentName(i int) string { return fmt.Sprintf("agent-%d", i) }

func (e *environment) stop() {
	if e.server != nil {
		if err := e.server.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
	}
	if e.api != nil {
		_ = e.api.Stop()
	}
	e.keepLogs()
	_ = os.RemoveAll(e.dir)
}

// keepLogs copies the relay-server logs into --profile-dir/logs, for a
// look at what a phase did.
func (e *environment) keepLogs() {
	logs, _ := filepath.Glob(filepath.Join(e.dir, "*.log"))
	if len(logs) == 0 || e.profileDir == "" {
		return
	}
	dir := filepath.Join(e.profileDir, "logs")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return
	}
	for _, l := range logs {
		if b, err := os.ReadFile(l); err == nil {
			_ = os.WriteFile(filepath.Join(dir, filepath.Base(l)), b, 0o644)
		}
	}
}

// controlPlane returns the names and processes of the local cluster's
// kube-apiserver and etcd, those it finds.
func (e *environment) controlPlane() (names []string, pids []int) {
	if u, err := url.Parse(e.api.Config.Host); err == nil {
		if pid, err := procstat.PidOf("kube-apiserver", "--secure-port="+u.Port()); err == nil {
			names, pids = append(names, "kube-apiserver"), append(pids, pid)
		}
	}
	if etcd := e.api.ControlPlane.Etcd; etcd != nil && etcd.URL != nil {
		if pid, err := procstat.PidOf("etcd", "--listen-client-urls="+etcd.URL.String()); err == nil {
			names, pids = append(names, "etcd"), append(pids, pid)
		}
	}
	return names, pids
}
