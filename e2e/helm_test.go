package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/meshrelay/meshrelay/hack/chartdiff/chart"
	"github.com/meshrelay/meshrelay/internal/localmesh"
	"github.com/meshrelay/meshrelay/internal/testenv"
)

// The values files written for the product meshrelay is compatible with,
// kept beside the chart, and the settings a workload install adds to them.
const (
	productManagementValues = "charts/meshrelay/ci/product-management-values.yaml"
	productAgentValues      = "charts/meshrelay/ci/product-agent-values.yaml"
	productBYOPKIValues     = "charts/meshrelay/ci/product-byo-pki-management-values.yaml"
)

var workloadSet = []string{"--set", "glooMgmtServer.enabled=false", "--set", "glooAgent.enabled=true"}

// helmBinary returns the pinned helm, failing the test with how to get it.
// Under -short (make test-unit, which builds no tools) it skips the test.
func helmBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("needs the pinned helm, which -short (make test-unit) does not build: run make test")
	}
	helm, err := chart.Helm()
	if err != nil {
		t.Fatal(err)
	}
	return helm
}

// runHelm runs helm with args in the repository and returns its combined
// output, failing the test with it when helm exits non-zero.
func runHelm(ctx context.Context, t *testing.T, helm, root string, args ...string) string {
	t.Helper()
	out, err := helmOutput(ctx, helm, root, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func helmOutput(ctx context.Context, helm, root string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, helm, args...)
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("helm %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// TestHelmChartAcceptsProductValues lints and renders the chart with the
// values files written for the product, unchanged, and checks that their
// settings reach the binaries' flags and the RBAC rules: the defaults give
// no flag beyond the namespace, the bring-your-own-PKI file turns the
// built-in CA off, and renamed secrets are renamed in flags, Roles and the
// webhook's match conditions alike. A workload install without a cluster
// name fails, saying how to give it.
func TestHelmChartAcceptsProductValues(t *testing.T) {
	helm := helmBinary(t)
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	chartDir := "charts/meshrelay"
	render := func(t *testing.T, args ...string) []*unstructured.Unstructured {
		t.Helper()
		out := runHelm(ctx, t, helm, root, append([]string{"template", "meshrelay", chartDir, "--namespace", "gloo-mesh"}, args...)...)
		objs, err := localmesh.Objects(out)
		if err != nil {
			t.Fatal(err)
		}
		return objs
	}
	args := func(t *testing.T, objs []*unstructured.Unstructured, name string) []string {
		t.Helper()
		return typed[appsv1.Deployment](t, find(t, objs, "Deployment", name)).Spec.Template.Spec.Containers[0].Args
	}
	secretNames := func(t *testing.T, objs []*unstructured.Unstructured, role string) []string {
		t.Helper()
		return typed[rbacv1.Role](t, find(t, objs, "Role", role)).Rules[0].ResourceNames
	}

	t.Run("helm lint passes with each values file", func(t *testing.T) {
		runHelm(ctx, t, helm, root, "lint", "--strict", chartDir)
		runHelm(ctx, t, helm, root, "lint", "--strict", chartDir, "-f", productManagementValues)
		runHelm(ctx, t, helm, root, "lint", "--strict", chartDir, "-f", productBYOPKIValues)
		runHelm(ctx, t, helm, root, append([]string{"lint", "--strict", chartDir, "-f", productAgentValues, "--set", "cluster=cluster-1"}, workloadSet...)...)
	})

	t.Run("the product's default management values render the defaults: no flag beyond the namespaces", func(t *testing.T) {
		objs := render(t, "-f", productManagementValues)
		if got := args(t, objs, "gloo-mesh-mgmt-server"); !slices.Equal(got, []string{"--namespace=gloo-mesh"}) {
			t.Errorf("relay-server args %q, want only --namespace=gloo-mesh", got)
		}
		want := []string{"relay-root-tls-secret", "relay-server-tls-secret", "relay-tls-signing-secret", "relay-identity-token-secret"}
		if got := secretNames(t, objs, "relay-server"); !slices.Equal(got, want) {
			t.Errorf("relay-server's Role reads secrets %q, want %q", got, want)
		}
	})

	t.Run("the product's bring-your-own-PKI values turn the built-in CA, its certificates and the token generation off", func(t *testing.T) {
		got := args(t, render(t, "-f", productBYOPKIValues), "gloo-mesh-mgmt-server")
		for _, flag := range []string{"--disable-ca", "--disable-ca-cert-generation", "--disable-token-generation"} {
			if !slices.Contains(got, flag) {
				t.Errorf("relay-server args %q lack %s", got, flag)
			}
		}
	})

	t.Run("the product's agent values with a cluster name make a workload install", func(t *testing.T) {
		objs := render(t, append([]string{"-f", productAgentValues, "--set", "cluster=cluster-7"}, workloadSet...)...)
		for _, o := range objs {
			if o.GetName() == "gloo-mesh-mgmt-server" || o.GetName() == "relay-server" {
				t.Errorf("a workload install renders relay-server's %s %s", o.GetKind(), o.GetName())
			}
		}
		pod, err := localmesh.PodOf(objs, "relay-agent", "relay-agent-0")
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"MESHRELAY_CLUSTER=cluster-7", "MESHRELAY_SERVER_ADDRESS=gloo-mesh-mgmt-server.gloo-mesh:9900", "MESHRELAY_AUTHORITY=gloo-mesh-mgmt-server.gloo-mesh"} {
			if !slices.Contains(pod.Env, want) {
				t.Errorf("relay-agent's environment %q lacks %s", pod.Env, want)
			}
		}
	})

	t.Run("renamed secrets and a grace ratio reach the flags, the Roles and the webhook's match conditions", func(t *testing.T) {
		objs := render(t, append([]string{"-f", productAgentValues, "--set", "cluster=cluster-1",
			"--set", "glooAgent.relay.clientTlsSecret.name=my-client", "--set", "glooAgent.relay.rootTlsSecret.name=my-root",
			"--set", "glooAgent.relay.tokenSecret.name=my-token", "--set", "glooAgent.relay.tokenSecret.key=tok",
			"--set", "glooAgent.relay.clientTlsSecretRotationGracePeriodRatio=0.5",
			"--set", "glooAgent.relay.serverAddress=relay.example.com:443"}, workloadSet...)...)
		wantFlags := []string{"--root-tls-secret=my-root", "--client-tls-secret=my-client", "--token-secret=my-token", "--token-secret-key=tok",
			"--client-tls-secret-rotation-grace-period-ratio=0.5"}
		for _, dep := range []string{"relay-agent", "relay-webhook"} {
			got := args(t, objs, dep)
			for _, f := range wantFlags {
				if !slices.Contains(got, f) {
					t.Errorf("%s args %q lack %s", dep, got, f)
				}
			}
		}
		// The root secret reaches relay-agent through its trust bundle
		// volume: the Role names it only to patch it.
		if got, want := secretNames(t, objs, "relay-agent"), []string{"my-client", "my-token"}; !slices.Equal(got, want) {
			t.Errorf("relay-agent's Role reads secrets %q, want %q", got, want)
		}
		pod, err := localmesh.PodOf(objs, "relay-agent", "relay-agent-0")
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(pod.Env, "MESHRELAY_SERVER_ADDRESS=relay.example.com:443") {
			t.Errorf("relay-agent's environment %q lacks the serverAddress", pod.Env)
		}
		vwc := find(t, objs, "ValidatingWebhookConfiguration", "meshrelay-validating")
		hooks, _, _ := unstructured.NestedSlice(vwc.Object, "webhooks")
		conds, _, _ := unstructured.NestedSlice(hooks[0].(map[string]any), "matchConditions")
		expr := conds[0].(map[string]any)["expression"].(string)
		for _, name := range []string{"'my-root'", "'my-client'", "'my-token'"} {
			if !strings.Contains(expr, name) {
				t.Errorf("the secrets webhook's match condition %q does not name %s", expr, name)
			}
		}
	})

	t.Run("a workload install without a cluster name fails, saying how to set it", func(t *testing.T) {
		out, err := helmOutput(ctx, helm, root, append([]string{"template", "meshrelay", chartDir, "-f", productAgentValues}, workloadSet...)...)
		if err == nil || !strings.Contains(out, "--set cluster=<name>") {
			t.Errorf("helm template without cluster: %v\n%s\nwant a failure saying --set cluster=<name>", err, out)
		}
	})
}

// TestHelmInstall installs the chart with helm install on a management and
// a workload cluster, with the values files written for the product, and
// runs relay-webhook, relay-server and relay-agent as local processes the
// way the installed Deployments say, as their ServiceAccounts: relayctl
// registers the workload cluster and its KubernetesCluster becomes
// Connected=True. A missing RBAC rule or a wrong flag in the chart fails it.
// The management install has cert-manager's controller issue relay-webhook's
// serving certificate (webhook.certManager.enabled), which relay-webhook
// serves from the mounted secret without its serving-certificate rights;
// the workload install's relay-webhook makes its own.
func TestHelmInstall(t *testing.T) {
	helm := helmBinary(t)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	mesh, env := startMesh(ctx, t, testenv.Options{Names: []string{"mgmt", "cluster-1"}, CertManager: true})
	var err error
	if mesh.ServerAddr, err = testenv.FreeAddr(); err != nil {
		t.Fatal(err)
	}
	if mesh.ServerMetrics, err = testenv.FreeAddr(); err != nil {
		t.Fatal(err)
	}

	// install runs helm install on cluster and logs its output. No Service
	// reaches a local process, so it points the release's webhook
	// configurations at hook (replacing their service with a URL); then
	// the mesh keeps the release's objects (helm get manifest), and
	// StartServer, StartWebhook and StartAgent run the binaries as its
	// Deployments say, as their ServiceAccounts.
	install := func(cluster, hook string, args ...string) {
		t.Helper()
		base := []string{"--kubeconfig", env.Kubeconfig, "--kube-context", cluster}
		out := runHelm(ctx, t, helm, mesh.Root, append(append([]string{"install", "meshrelay", "charts/meshrelay",
			"--namespace", "gloo-mesh", "--create-namespace"}, base...), args...)...)
		t.Logf("helm install on %s:\n%s", cluster, out)
		manifest := runHelm(ctx, t, helm, mesh.Root, append([]string{"get", "manifest", "meshrelay", "--namespace", "gloo-mesh"}, base...)...)
		objs, err := localmesh.Objects(manifest)
		if err != nil {
			t.Fatal(err)
		}
		var hooks []string
		for _, o := range objs {
			if k := o.GetKind(); k == "ValidatingWebhookConfiguration" || k == "MutatingWebhookConfiguration" {
				data, err := yaml.Marshal(o.Object)
				if err != nil {
					t.Fatal(err)
				}
				hooks = append(hooks, string(data))
			}
		}
		if len(hooks) != 2 {
			t.Fatalf("the release on %s holds %d webhook configurations, want 2", cluster, len(hooks))
		}
		pointed, err := localmesh.PointWebhooksAt(strings.Join(hooks, "---\n"), hook)
		if err != nil {
			t.Fatal(err)
		}
		env.MustKubectl(ctx, t, pointed, "--context", cluster, "replace", "-f", "-")
		if err := mesh.InstallRendered(ctx, cluster, manifest, hook); err != nil {
			t.Fatal(err)
		}
	}
	must := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}

	mgmtHook, err := testenv.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	install("mgmt", mgmtHook, "-f", productManagementValues, "--set", "webhook.certManager.enabled=true")
	// StartWebhook waits for the secret the Deployment mounts, which
	// cert-manager writes from the chart's Certificate.
	must(mesh.StartWebhook(ctx, "mgmt", "", mgmtHook))
	if out := env.MustKubectl(ctx, t, "", "--context", "mgmt", "-n", "meshrelay-system", "get", "certificate", "relay-webhook",
		"-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`); out != "True" {
		t.Errorf("Certificate meshrelay-system/relay-webhook on mgmt: Ready=%q, want True", out)
	}
	must(mesh.StartServer(ctx, "mgmt"))

	// The workload install: the product's agent values, this cluster's
	// name and where relay-server listens, as a user sets them.
	workHook, err := testenv.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	install("cluster-1", workHook, append([]string{"-f", productAgentValues, "--skip-crds",
		"--set", "cluster=cluster-1", "--set", "glooAgent.relay.serverAddress=" + mesh.ServerAddr}, workloadSet...)...)
	must(mesh.StartWebhook(ctx, "cluster-1", "cluster-1", workHook))

	stdout, stderr, code := mesh.Relayctl(ctx, "register", "cluster-1", "--mgmt-context", "mgmt", "--remote-context", "cluster-1")
	if code != 0 {
		t.Fatalf("relayctl register cluster-1: exit %d: %s", code, stderr)
	}
	t.Logf("relayctl register cluster-1:\n%s", stdout)
	// The agent's cluster name and relay-server's address come from the
	// chart's settings ConfigMap, so StartAgent adds neither flag.
	_, agentMetrics, err := mesh.StartAgent("cluster-1", "cluster-1")
	if err != nil {
		t.Fatal(err)
	}

	testenv.Eventually(t, "cluster-1 Connected=True", 90*time.Second, func() error {
		out, _, err := env.Kubectl(ctx, "", "--context", "mgmt", "-n", "gloo-mesh", "get", "kubernetescluster", "cluster-1",
			"-o", `jsonpath={.status.conditions[?(@.type=="Connected")].status}`)
		if err != nil || out != "True" {
			return fmt.Errorf("Connected=%q (%v)", out, err)
		}
		return nil
	})
	t.Logf("kubectl get kubernetesclusters -n gloo-mesh:\n%s", env.MustKubectl(ctx, t, "", "--context", "mgmt", "-n", "gloo-mesh", "get", "kubernetesclusters"))

	// The agent holds the client certificate relay-server signed, in the
	// secret the product's values name, and is ready.
	if out := env.MustKubectl(ctx, t, "", "--context", "cluster-1", "-n", "gloo-mesh", "get", "secret", "relay-client-tls-secret", "-o", "name"); strings.TrimSpace(out) != "secret/relay-client-tls-secret" {
		t.Errorf("relay-client-tls-secret on cluster-1: %q", out)
	}
	resp, err := http.Get("http://" + agentMetrics + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("relay-agent /readyz: %s", resp.Status)
	}
	t.Logf("helm list on mgmt:\n%s", runHelm(ctx, t, helm, mesh.Root, "list", "--all-namespaces", "--kubeconfig", env.Kubeconfig, "--kube-context", "mgmt"))

	// What a user then runs: relayctl as the kubectl plugin, as make build
	// and krew install it, checking the install and the connection.
	plugins := t.TempDir()
	if err := os.Symlink(filepath.Join(mesh.Bins, "relayctl"), filepath.Join(plugins, "kubectl-relay")); err != nil {
		t.Fatal(err)
	}
	check := env.KubectlCmd(ctx, "relay", "check", "--context", "mgmt", "--remote-context", "cluster-1")
	check.Env = append(check.Env, "PATH="+plugins+string(os.PathListSeparator)+os.Getenv("PATH"))
	var checked bytes.Buffer
	check.Stdout, check.Stderr = &checked, &checked
	err = check.Run()
	t.Logf("kubectl relay check --context mgmt --remote-context cluster-1:\n%s", checked.String())
	if err != nil {
		t.Errorf("kubectl relay check: %v, want exit 0 (no problems)", err)
	}
}
