package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/meshrelay/meshrelay/internal/localmesh"
	"github.com/meshrelay/meshrelay/internal/testenv"
	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/pkg/pki"
)

// overlays are every overlay users apply, relative to manifests/overlays.
var overlays = []string{
	"management", "workload",
	"cert-manager/management", "cert-manager/workload",
	"vault/management", "vault/workload",
	"insecure/management", "insecure/workload",
}

// TestEveryOverlayBuildsAndApplies builds each overlay with kubectl
// kustomize, applies it with server-side dry-run to a local cluster that
// has the meshrelay and cert-manager CRDs, checks what each overlay is for,
// then applies the management and workload overlays for real and checks
// their RBAC with kubectl auth can-i.
func TestEveryOverlayBuildsAndApplies(t *testing.T) {
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	env := testenv.Start(t, testenv.Options{
		Names:   []string{"overlays"},
		CRDDirs: []string{filepath.Join(root, "manifests", "crds"), filepath.Join(root, "hack", "crds", "cert-manager")},
	})
	ctx := t.Context()
	kubectl := func(stdin string, args ...string) string {
		t.Helper()
		return env.MustKubectl(ctx, t, stdin, args...)
	}
	// A server-side dry-run does not create namespaces, so the namespaced
	// objects of a first apply need them to exist already.
	kubectl("", "create", "namespace", config.DefaultNamespace)
	kubectl("", "create", "namespace", config.DefaultWebhookNamespace)

	built := map[string][]*unstructured.Unstructured{}
	for _, o := range overlays {
		t.Run(o+" builds and applies with server-side dry-run", func(t *testing.T) {
			out := kubectl("", "kustomize", filepath.Join(root, "manifests", "overlays", o))
			objs, err := localmesh.Objects(out)
			if err != nil {
				t.Fatal(err)
			}
			built[o] = objs
			kubectl(out, "apply", "--dry-run=server", "-f", "-")
		})
	}
	t.Run("every Deployment has its budget, spread, labels and network policy, the webhook its priority class", func(t *testing.T) {
		for _, o := range overlays {
			checkProductionReady(t, o, built[o])
		}
	})

	t.Run("management runs the CA and serves the documented names", func(t *testing.T) {
		objs := built["management"]
		server := find(t, objs, "Deployment", "gloo-mesh-mgmt-server")
		if args := containerArgs(t, server); slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(a, "--disable") }) {
			t.Errorf("management server args %v turn part of the CA off", args)
		}
		svc := find(t, objs, "Service", "gloo-mesh-mgmt-server")
		ports, _, _ := unstructured.NestedSlice(svc.Object, "spec", "ports")
		if len(ports) == 0 || fmt.Sprint(ports[0].(map[string]any)["port"]) != "9900" {
			t.Errorf("service ports %v, want grpc on 9900 first", ports)
		}
		find(t, objs, "CustomResourceDefinition", "kubernetesclusters.meshrelay.dev")
		find(t, objs, "ValidatingWebhookConfiguration", config.DefaultValidatingWebhook)
	})
	t.Run("workload gives the agent and the webhook settings.env", func(t *testing.T) {
		objs := built["workload"]
		for _, d := range []*unstructured.Unstructured{find(t, objs, "Deployment", "relay-agent"), find(t, objs, "Deployment", "relay-webhook")} {
			from, _, _ := unstructured.NestedSlice(d.Object, "spec", "template", "spec", "containers")
			ref := ""
			if envFrom, ok := from[0].(map[string]any)["envFrom"].([]any); ok && len(envFrom) == 1 {
				ref, _, _ = unstructured.NestedString(envFrom[0].(map[string]any), "configMapRef", "name")
			}
			cm := findPrefix(t, objs, "ConfigMap", d.GetNamespace(), "meshrelay-settings")
			if ref != cm.GetName() {
				t.Errorf("%s envFrom %q, want ConfigMap %s", d.GetName(), ref, cm.GetName())
			}
			if v, _, _ := unstructured.NestedString(cm.Object, "data", config.EnvCluster); v != "cluster-1" {
				t.Errorf("%s/%s %s = %q, want settings.env's cluster-1", cm.GetNamespace(), cm.GetName(), config.EnvCluster, v)
			}
		}
		agent := find(t, objs, "Deployment", "relay-agent")
		if l := agent.Object["spec"].(map[string]any)["template"].(map[string]any)["metadata"].(map[string]any)["labels"].(map[string]any); l["meshrelay.dev/inject"] != "relay-agent" {
			t.Errorf("agent pods are not labelled for injection: %v", l)
		}
	})
	for _, kind := range []string{"cert-manager", "vault"} {
		t.Run(kind+" turns the CA off and has cert-manager issue both certificates", func(t *testing.T) {
			mgmt, work := built[kind+"/management"], built[kind+"/workload"]
			args := containerArgs(t, find(t, mgmt, "Deployment", "gloo-mesh-mgmt-server"))
			for _, want := range []string{"--disable-ca", "--disable-ca-cert-generation", "--disable-token-generation"} {
				if !slices.Contains(args, want) {
					t.Errorf("server args %v lack %s", args, want)
				}
			}
			dns, _, _ := unstructured.NestedStringSlice(find(t, mgmt, "Certificate", "relay-server-tls").Object, "spec", "dnsNames")
			if !slices.ContainsFunc(dns, func(n string) bool { return pki.NameCovers(n, config.DefaultAuthority) }) {
				t.Errorf("server Certificate names %v do not cover the authority %s", dns, config.DefaultAuthority)
			}
			dns, _, _ = unstructured.NestedStringSlice(find(t, work, "Certificate", "relay-client-tls").Object, "spec", "dnsNames")
			if !slices.Equal(dns, []string{"cluster-1"}) {
				t.Errorf("client Certificate names %v, want settings.env's [cluster-1]", dns)
			}
			wargs := containerArgs(t, find(t, work, "Deployment", "relay-webhook"))
			if !slices.Contains(wargs, "--certificates=files") {
				t.Errorf("workload webhook args %v: want cert-manager's serving certificate (--certificates=files)", wargs)
			}
		})
	}
	t.Run("vault differs from cert-manager only in its Issuer", func(t *testing.T) {
		for _, side := range []string{"management", "workload"} {
			cm, vault := built["cert-manager/"+side], built["vault/"+side]
			if _, ok := find(t, vault, "Issuer", "relay-issuer").Object["spec"].(map[string]any)["vault"]; !ok {
				t.Errorf("vault/%s: relay-issuer is not a Vault Issuer", side)
			}
			if a, b := withoutIssuer(t, cm), withoutIssuer(t, vault); a != b {
				t.Errorf("vault/%s differs from cert-manager/%s beyond relay-issuer", side, side)
			}
		}
	})
	t.Run("insecure turns TLS off on both sides", func(t *testing.T) {
		if args := containerArgs(t, find(t, built["insecure/management"], "Deployment", "gloo-mesh-mgmt-server")); !slices.Contains(args, "--insecure") {
			t.Errorf("server args %v", args)
		}
		if args := containerArgs(t, find(t, built["insecure/workload"], "Deployment", "relay-agent")); !slices.Contains(args, "--insecure") {
			t.Errorf("agent args %v", args)
		}
	})

	t.Run("RBAC is least privilege", func(t *testing.T) {
		kubectl("", "apply", "-k", filepath.Join(root, "manifests", "overlays", "management"))
		// The workload overlay with federated trust, as its component's
		// comment tells users to write it, once istio-system exists.
		kubectl("", "create", "namespace", "istio-system")
		fed := t.TempDir()
		rel := func(p string) string {
			r, err := filepath.Rel(fed, filepath.Join(root, "manifests", p))
			if err != nil {
				t.Fatal(err)
			}
			return r
		}
		kust := fmt.Sprintf("resources:\n  - %s\ncomponents:\n  - %s\n", rel("overlays/workload"), rel("components/istio-federated-trust"))
		if err := os.WriteFile(filepath.Join(fed, "kustomization.yaml"), []byte(kust), 0o644); err != nil {
			t.Fatal(err)
		}
		fedObjs, err := localmesh.Objects(kubectl("", "kustomize", fed))
		if err != nil {
			t.Fatal(err)
		}
		if args := containerArgs(t, find(t, fedObjs, "Deployment", "relay-agent")); !slices.Contains(args, "--federated-trust") {
			t.Errorf("agent args %v with the istio-federated-trust component: want --federated-trust", args)
		}
		kubectl("", "apply", "-k", fed)
		server := "system:serviceaccount:gloo-mesh:relay-server"
		agent := "system:serviceaccount:gloo-mesh:relay-agent"
		for _, c := range []struct {
			as, verb, what, ns string
			want               bool
		}{
			{server, "create", "secrets", "gloo-mesh", true},
			{server, "watch", "secrets", "gloo-mesh", false},
			{server, "watch", "secrets/relay-root-tls-secret", "gloo-mesh", true},
			{server, "update", "secrets/relay-server-tls-secret", "gloo-mesh", true},
			{server, "patch", "secrets/relay-server-tls-secret", "gloo-mesh", false},
			{server, "update", "secrets/relay-identity-token-secret", "gloo-mesh", false},
			{server, "delete", "secrets/relay-root-tls-secret", "gloo-mesh", false},
			{server, "list", "kubernetesclusters.meshrelay.dev", "gloo-mesh", true},
			{server, "create", "kubernetesclusters.meshrelay.dev", "gloo-mesh", false},
			{server, "get", "secrets", "kube-system", false},
			{agent, "update", "secrets/relay-client-tls-secret", "gloo-mesh", true},
			{agent, "update", "secrets/relay-root-tls-secret", "gloo-mesh", false},
			{agent, "delete", "secrets/relay-client-tls-secret", "gloo-mesh", false},
			{agent, "update", "leases.coordination.k8s.io", "gloo-mesh", true},
			{agent, "get", "secrets", "kube-system", false},
			{agent, "update", "leases.coordination.k8s.io", "kube-system", false},
			{server, "list", "roottrustpolicies.meshrelay.dev", "gloo-mesh", true},
			{server, "update", "roottrustpolicies.meshrelay.dev", "gloo-mesh", false},
			{agent, "update", "secrets/cacerts", "istio-system", true},
			{agent, "watch", "secrets/cacerts", "istio-system", true},
			{agent, "get", "secrets/istio-ca-secret", "istio-system", false},
			{agent, "delete", "secrets/cacerts", "istio-system", false},
			{agent, "patch", "deployments.apps", "istio-system", true},
			{agent, "patch", "deployments.apps", "bookinfo", false},
			{agent, "delete", "deployments.apps", "bookinfo", false},
			{agent, "get", "secrets/cacerts", "bookinfo", false},
		} {
			out, _, _ := env.Kubectl(ctx, "", "auth", "can-i", c.verb, c.what, "-n", c.ns, "--as", c.as)
			if got := strings.TrimSpace(out) == "yes"; got != c.want {
				t.Errorf("%s can %s %s in %s: %v, want %v", c.as, c.verb, c.what, c.ns, got, c.want)
			}
		}
		if out, _, _ := env.Kubectl(ctx, "", "auth", "can-i", "update", "roottrustpolicies.meshrelay.dev", "--subresource=status", "-n", "gloo-mesh", "--as", server); strings.TrimSpace(out) != "yes" {
			t.Errorf("%s cannot update roottrustpolicies/status: %s", server, out)
		}
	})
}

func find(t *testing.T, objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	t.Helper()
	for _, o := range objs {
		if o.GetKind() == kind && o.GetName() == name {
			return o
		}
	}
	t.Fatalf("no %s %s", kind, name)
	return nil
}

func findPrefix(t *testing.T, objs []*unstructured.Unstructured, kind, namespace, prefix string) *unstructured.Unstructured {
	t.Helper()
	for _, o := range objs {
		if o.GetKind() == kind && o.GetNamespace() == namespace && strings.HasPrefix(o.GetName(), prefix) {
			return o
		}
	}
	t.Fatalf("no %s %s* in %s", kind, prefix, namespace)
	return nil
}

func containerArgs(t *testing.T, d *unstructured.Unstructured) []string {
	t.Helper()
	cs, _, _ := unstructured.NestedSlice(d.Object, "spec", "template", "spec", "containers")
	if len(cs) == 0 {
		t.Fatalf("%s has no containers", d.GetName())
	}
	args, _, _ := unstructured.NestedStringSlice(cs[0].(map[string]any), "args")
	return args
}

// withoutIssuer is the overlay's objects as YAML, relay-issuer left out.
func withoutIssuer(t *testing.T, objs []*unstructured.Unstructured) string {
	t.Helper()
	var b strings.Builder
	for _, o := range objs {
		if o.GetKind() == "Issuer" && o.GetName() == "relay-issuer" {
			continue
		}
		data, err := yaml.Marshal(o.Object)
		if err != nil {
			t.Fatal(err)
		}
		b.Write(data)
	}
	return b.String()
}
