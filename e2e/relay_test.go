package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshrelay/meshrelay/pkg/testenv"
)

// buildBinaries builds the named commands into a temporary folder.
func buildBinaries(t *testing.T, names ...string) string {
	t.Helper()
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	args := []string{"build", "-o", dir + "/"}
	for _, n := range names {
		args = append(args, "./cmd/"+n)
	}
	cmd := exec.Command("go", args...)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %v: %v\n%s", names, err, out)
	}
	return dir
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// process is a running binary whose output goes to a log file.
type process struct {
	cmd  *exec.Cmd
	log  string
	done chan error
}

func start(t *testing.T, bin string, args ...string) *process {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), filepath.Base(bin)+".log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	p := &process{cmd: cmd, log: logPath, done: make(chan error, 1)}
	go func() { p.done <- cmd.Wait(); f.Close() }()
	t.Cleanup(func() {
		if err := p.stop(); err != nil {
			t.Errorf("%s: %v", filepath.Base(bin), err)
		}
		if t.Failed() {
			data, _ := os.ReadFile(logPath)
			t.Logf("log of %s:\n%s", filepath.Base(bin), tail(string(data), 40))
		}
	})
	return p
}

// stop sends SIGTERM and expects a clean exit within 20 seconds.
func (p *process) stop() error {
	if p.cmd.ProcessState != nil {
		return nil
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		if err != nil {
			return fmt.Errorf("did not exit cleanly on SIGTERM: %w", err)
		}
		return nil
	case <-time.After(20 * time.Second):
		_ = p.cmd.Process.Kill()
		return fmt.Errorf("did not stop within 20s of SIGTERM")
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// TestRelayBinariesConnectAcrossClusters runs relay-server and relay-agent
// as processes and registers the workload cluster with the manual steps of
// reference 001, run through kubectl.
func TestRelayBinariesConnectAcrossClusters(t *testing.T) {
	bins := buildBinaries(t, "relay-server", "relay-agent")
	env := testenv.Start(t, testenv.Options{Names: []string{"mgmt", "workload"}})
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	kubectl := func(stdin string, args ...string) string {
		t.Helper()
		out, _, err := env.Kubectl(ctx, stdin, args...)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	for _, c := range []string{"mgmt", "workload"} {
		kubectl("", "--context", c, "create", "namespace", "gloo-mesh")
	}

	relayAddr, serverMetrics, agentMetrics := freeAddr(t), freeAddr(t), freeAddr(t)
	start(t, filepath.Join(bins, "relay-server"), "--kubeconfig", env.Cluster("mgmt").Kubeconfig,
		"--listen-address", relayAddr, "--metrics-address", serverMetrics)
	testenv.Eventually(t, "relay-server is ready", time.Minute, func() error {
		resp, err := http.Get("http://" + serverMetrics + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("readyz %d", resp.StatusCode)
		}
		return nil
	})

	// Reference 001: copy the root CA and the identity token by hand.
	dir := t.TempDir()
	for _, s := range []struct{ secret, key string }{{"relay-root-tls-secret", "ca.crt"}, {"relay-identity-token-secret", "token"}} {
		enc := kubectl("", "--context", "mgmt", "-n", "gloo-mesh", "get", "secret", s.secret, "-o", "jsonpath={.data."+strings.ReplaceAll(s.key, ".", `\.`)+"}")
		raw, err := base64.StdEncoding.DecodeString(enc)
		if err != nil || len(raw) == 0 {
			t.Fatalf("secret %s key %s: %q %v", s.secret, s.key, enc, err)
		}
		path := filepath.Join(dir, s.key)
		if err := os.WriteFile(path, raw, 0o600); err != nil {
			t.Fatal(err)
		}
		kubectl("", "--context", "workload", "-n", "gloo-mesh", "create", "secret", "generic", s.secret, "--from-file", s.key+"="+path)
	}
	kubectl("apiVersion: meshrelay.dev/v1alpha1\nkind: KubernetesCluster\nmetadata:\n  name: cluster-1\n  namespace: gloo-mesh\n",
		"--context", "mgmt", "apply", "-f", "-")

	start(t, filepath.Join(bins, "relay-agent"), "--kubeconfig", env.Cluster("workload").Kubeconfig,
		"--cluster", "cluster-1", "--server-address", relayAddr, "--metrics-address", agentMetrics)

	testenv.Eventually(t, "the relay metrics read 1 for cluster-1", 90*time.Second, func() error {
		for _, g := range []string{"relay_push_clients_connected", "relay_pull_clients_connected"} {
			if m := testenv.ScrapeMetric("http://"+serverMetrics+"/metrics", g+`{cluster="cluster-1"}`); !strings.HasSuffix(m, " 1") {
				return fmt.Errorf("%s line %q", g, m)
			}
		}
		return nil
	})
	out := kubectl("", "--context", "workload", "-n", "gloo-mesh", "get", "secret", "relay-client-tls-secret", "-o", "jsonpath={.type} {.data}")
	if !strings.HasPrefix(out, "kubernetes.io/tls ") || !bytes.Contains([]byte(out), []byte("ca.crt")) {
		t.Errorf("relay-client-tls-secret: %s", out)
	}
	if lease := kubectl("", "--context", "workload", "-n", "gloo-mesh", "get", "lease", "relay-agent-cluster-1", "-o", "jsonpath={.spec.holderIdentity}"); lease == "" {
		t.Error("the agent holds no Lease: the rotator must run only on the leader")
	}
}
