package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/meshrelay/meshrelay/internal/testenv"
)

// TestInstallRegisterCheckBreakAndRepair installs meshrelay with the
// overlays on a management cluster and two workload clusters, runs the
// binaries as processes, registers both clusters with relayctl, and checks
// that the relay metrics read 1 per cluster and relayctl check passes. Then
// it breaks one thing at a time and asserts that the webhook or relayctl
// check reports it with its fix, and that the system recovers once it is
// repaired.
func TestInstallRegisterCheckBreakAndRepair(t *testing.T) {
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 12*time.Minute)
	defer cancel()
	workloads := []string{"cluster-1", "cluster-2"}
	mesh, env := startMesh(ctx, t, testenv.Options{
		Names:   append([]string{"mgmt"}, workloads...),
		CRDDirs: []string{filepath.Join(root, "manifests", "crds"), filepath.Join(root, "hack", "crds", "cert-manager")},
	})
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	kubectl := func(stdin string, args ...string) (string, string, error) {
		return env.Kubectl(ctx, stdin, args...)
	}

	// Install: the management overlay, its webhook, then relay-server.
	webhooks := map[string]string{}
	for _, c := range env.Clusters {
		webhooks[c.Name], err = testenv.FreeAddr()
		must(err)
	}
	must(mesh.Install(ctx, "mgmt", "management", nil, webhooks["mgmt"]))
	_, err = mesh.StartWebhook(ctx, "mgmt", "", webhooks["mgmt"])
	must(err)
	server, err := mesh.StartServer(ctx, "mgmt")
	must(err)
	for _, c := range workloads {
		must(mesh.Install(ctx, c, "workload", map[string]string{"MESHRELAY_CLUSTER": c, "MESHRELAY_SERVER_ADDRESS": mesh.ServerAddr}, webhooks[c]))
		_, err := mesh.StartWebhook(ctx, c, c, webhooks[c])
		must(err)
	}

	t.Run("register refuses a name that is not a DNS-1123 label and changes nothing", func(t *testing.T) {
		_, stderr, code := mesh.Relayctl(ctx, "register", "Cluster_3", "--mgmt-context", "mgmt", "--remote-context", "cluster-1")
		if code == 0 || !strings.Contains(stderr, `cluster name "Cluster_3"`) {
			t.Errorf("exit %d, stderr %q: want a refusal naming the name", code, stderr)
		}
		if out, _, _ := kubectl("", "--context", "cluster-1", "-n", "gloo-mesh", "get", "secrets", "-o", "name"); strings.Contains(out, "relay-identity-token-secret") {
			t.Errorf("a refused register still copied the token: %s", out)
		}
	})
	agents := map[string]*testenv.Process{}
	for _, c := range workloads {
		stdout, stderr, code := mesh.Relayctl(ctx, "register", c, "--mgmt-context", "mgmt", "--remote-context", c)
		if code != 0 {
			t.Fatalf("relayctl register %s: exit %d: %s", c, code, stderr)
		}
		for _, want := range []string{"secret gloo-mesh/relay-root-tls-secret created", "secret gloo-mesh/relay-identity-token-secret created", "KubernetesCluster gloo-mesh/" + c + " created"} {
			if !strings.Contains(stdout, want) {
				t.Errorf("register %s output lacks %q:\n%s", c, want, stdout)
			}
		}
		if stdout, _, code := mesh.Relayctl(ctx, "register", c, "--mgmt-context", "mgmt", "--remote-context", c); code != 0 || strings.Count(stdout, "unchanged") != 1 ||
			!strings.Contains(stdout, "secret gloo-mesh/relay-identity-token-secret updated") {
			t.Errorf("registering %s again: exit %d, want the root unchanged and a fresh token:\n%s", c, code, stdout)
		}
		agents[c], _, err = mesh.StartAgent(c, c)
		must(err)
	}

	metrics := "http://" + mesh.ServerMetrics + "/metrics"
	check := func() (string, int) {
		args := []string{"check", "--mgmt-context", "mgmt", "--server-metrics", metrics}
		for _, c := range workloads {
			args = append(args, "--remote-context", c)
		}
		stdout, stderr, code := mesh.Relayctl(ctx, args...)
		return stdout + stderr, code
	}
	checkPasses := func(t *testing.T, within time.Duration) {
		t.Helper()
		testenv.Eventually(t, "relayctl check passes", within, func() error {
			if out, code := check(); code != 0 {
				return fmt.Errorf("exit %d:\n%s", code, out)
			}
			return nil
		})
	}
	checkReports := func(t *testing.T, within time.Duration, want ...string) {
		t.Helper()
		testenv.Eventually(t, "relayctl check reports "+strings.Join(want, ", "), within, func() error {
			out, code := check()
			if code != 1 {
				return fmt.Errorf("exit %d, want 1:\n%s", code, out)
			}
			for _, w := range want {
				if !strings.Contains(out, w) {
					return fmt.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			return nil
		})
	}

	t.Run("both agents bootstrap, the relay metrics read 1 per cluster, check passes", func(t *testing.T) {
		for _, c := range workloads {
			testenv.Eventually(t, c+" relay metrics read 1", 90*time.Second, func() error {
				for _, g := range []string{"relay_push_clients_connected", "relay_pull_clients_connected"} {
					if v := testenv.MetricValue(testenv.ScrapeMetric(metrics, g+`{cluster="`+c+`"}`)); v != 1 {
						return fmt.Errorf("%s = %v", g, v)
					}
				}
				return nil
			})
		}
		checkPasses(t, 30*time.Second)
		out, _ := check()
		for _, c := range workloads {
			// relayctl check's table: CLUSTER REGISTERED PUSH PULL ...
			if !regexp.MustCompile(`(?m)^` + c + ` +true +1 +1 `).MatchString(out) {
				t.Errorf("check's table lacks a row for %s registered with 1 push and 1 pull stream:\n%s", c, out)
			}
		}
	})

	t.Run("a deleted client secret is reported and comes back when the agent runs", func(t *testing.T) {
		must(agents["cluster-1"].Stop())
		_, _, err := kubectl("", "--context", "cluster-1", "-n", "gloo-mesh", "delete", "secret", "relay-client-tls-secret")
		must(err)
		checkReports(t, 30*time.Second, "cluster-1: secret gloo-mesh/relay-client-tls-secret: not found yet", "0 push and 0 pull streams",
			"cluster-1: bootstrap token: no unused bootstrap token for cluster-1", "relayctl register cluster-1")
		// Its token was spent: a fresh one brings it back.
		if _, stderr, code := mesh.Relayctl(ctx, "register", "cluster-1", "--mgmt-context", "mgmt", "--remote-context", "cluster-1"); code != 0 {
			t.Fatalf("register cluster-1 again: %s", stderr)
		}
		agents["cluster-1"], _, err = mesh.StartAgent("cluster-1", "cluster-1")
		must(err)
		checkPasses(t, 90*time.Second)
	})

	t.Run("a client secret with a wrong SAN is denied by the webhook with its fix", func(t *testing.T) {
		manifest, err := mesh.ClientSecretFor(ctx, "mgmt", "cluster-9")
		must(err)
		_, stderr, err := kubectl(manifest, "--context", "cluster-1", "apply", "-f", "-")
		if err == nil || !strings.Contains(stderr, `"cluster-9"`) || !strings.Contains(stderr, `issue it with DNS name "cluster-1"`) {
			t.Errorf("apply of a cluster-9 certificate on cluster-1: %v\n%s", err, stderr)
		}
		checkPasses(t, 30*time.Second)
	})

	t.Run("a deleted KubernetesCluster is reported, and the agent reconnects once it is registered again", func(t *testing.T) {
		_, _, err := kubectl("", "--context", "mgmt", "-n", "gloo-mesh", "delete", "kubernetescluster", "cluster-2")
		must(err)
		checkReports(t, 60*time.Second, "no KubernetesCluster cluster-2", "relayctl register cluster-2", "0 push and 0 pull streams")
		if _, stderr, code := mesh.Relayctl(ctx, "register", "cluster-2", "--mgmt-context", "mgmt", "--remote-context", "cluster-2"); code != 0 {
			t.Fatalf("register again: %s", stderr)
		}
		checkPasses(t, 2*time.Minute)
	})

	t.Run("a stopped server is reported, and agents reconnect when it is back", func(t *testing.T) {
		must(server.Stop())
		checkReports(t, 30*time.Second, "relay-server metrics", "is relay-server running?")
		// Back with one-minute client certificates, for the next step.
		server, err = mesh.StartServer(ctx, "mgmt", "--client-certificate-ttl", "1m")
		must(err)
		checkPasses(t, 2*time.Minute)
	})

	t.Run("an expired client certificate is reported, and the agent bootstraps again with a fresh token from relayctl register", func(t *testing.T) {
		must(agents["cluster-2"].Stop())
		_, _, err := kubectl("", "--context", "cluster-2", "-n", "gloo-mesh", "delete", "secret", "relay-client-tls-secret")
		must(err)
		// The agent used its last token when cluster-2 was registered again.
		if _, stderr, code := mesh.Relayctl(ctx, "register", "cluster-2", "--mgmt-context", "mgmt", "--remote-context", "cluster-2"); code != 0 {
			t.Fatalf("register cluster-2 again: %s", stderr)
		}
		agents["cluster-2"], _, err = mesh.StartAgent("cluster-2", "cluster-2")
		must(err)
		checkPasses(t, 90*time.Second) // a one-minute certificate now
		must(agents["cluster-2"].Stop())
		checkReports(t, 2*time.Minute, "cluster-2: secret gloo-mesh/relay-client-tls-secret", "expired")
		if _, stderr, code := mesh.Relayctl(ctx, "register", "cluster-2", "--mgmt-context", "mgmt", "--remote-context", "cluster-2"); code != 0 {
			t.Fatalf("register cluster-2 again: %s", stderr)
		}
		agents["cluster-2"], _, err = mesh.StartAgent("cluster-2", "cluster-2")
		must(err)
		checkPasses(t, 90*time.Second)
	})
}
