package e2e

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/meshrelay/meshrelay/internal/localmesh"
	"github.com/meshrelay/meshrelay/internal/testenv"
	"github.com/meshrelay/meshrelay/pkg/pki"
)

// The ServiceAccounts of the rendered manifests, as the API server names
// them.
const (
	serverSA  = "system:serviceaccount:gloo-mesh:relay-server"
	agentSA   = "system:serviceaccount:gloo-mesh:relay-agent"
	webhookSA = "system:serviceaccount:meshrelay-system:relay-webhook"
)

// canI is one row of an RBAC table: whether as may verb what (a resource,
// resource/name, or with sub a subresource) in ns. ns "" is cluster
// scope, "*" every namespace at once.
type canI struct {
	as, verb, what, ns string
	sub                string
	want               bool
}

func (c canI) String() string {
	scope := "in " + c.ns
	switch c.ns {
	case "":
		scope = "cluster-scoped"
	case "*":
		scope = "in every namespace"
	}
	what := c.what
	if c.sub != "" {
		what += " (" + c.sub + ")"
	}
	return fmt.Sprintf("%s %s %s %s", strings.TrimPrefix(c.as, "system:serviceaccount:"), c.verb, what, scope)
}

// allowed asks the API server, through kubectl auth can-i, whether c.as
// may do c.
func allowed(ctx context.Context, t *testing.T, env *testenv.Env, c canI) bool {
	t.Helper()
	args := []string{"auth", "can-i", c.verb, c.what, "--as", c.as}
	switch c.ns {
	case "":
	case "*":
		args = append(args, "--all-namespaces")
	default:
		args = append(args, "-n", c.ns)
	}
	if c.sub != "" {
		args = append(args, "--subresource="+c.sub)
	}
	// can-i exits 1 for "no": the answer is its output.
	out, stderr, _ := env.Kubectl(ctx, "", args...)
	switch strings.TrimSpace(out) {
	case "yes":
		return true
	case "no":
		return false
	}
	t.Fatalf("kubectl %s: no answer: %s %s", strings.Join(args, " "), out, stderr)
	return false
}

// rbacKinds are the kinds an RBAC table depends on: applying only these
// lets an overlay whose other objects need cert-manager's CRDs be checked
// on a bare cluster.
var rbacKinds = []string{"Namespace", "ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"}

// rbacOf builds the kustomization in dir and returns its RBAC objects as
// a YAML stream, Namespaces apart so that removing the rest keeps them.
func rbacOf(ctx context.Context, t *testing.T, env *testenv.Env, dir string) (namespaces, rbac string) {
	t.Helper()
	objs, err := localmesh.Objects(env.MustKubectl(ctx, t, "", "kustomize", dir))
	if err != nil {
		t.Fatal(err)
	}
	var ns, rest []string
	for _, o := range objs {
		if !slices.Contains(rbacKinds, o.GetKind()) {
			continue
		}
		doc, err := o.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		if o.GetKind() == "Namespace" {
			ns = append(ns, string(doc))
		} else {
			rest = append(rest, string(doc))
		}
	}
	if len(rest) == 0 {
		t.Fatalf("%s renders no RBAC", dir)
	}
	return strings.Join(ns, "\n---\n"), strings.Join(rest, "\n---\n")
}

// kustomization writes a kustomization over the repository's manifests
// (paths relative to manifests/) with components and extra text, and
// returns its folder.
func kustomization(t *testing.T, root string, resources, components []string, extra string) string {
	t.Helper()
	dir := t.TempDir()
	rel := func(p string) string {
		r, err := filepath.Rel(dir, filepath.Join(root, "manifests", p))
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	var b strings.Builder
	b.WriteString("resources:\n")
	for _, r := range resources {
		fmt.Fprintf(&b, "  - %s\n", rel(r))
	}
	if len(components) > 0 {
		b.WriteString("components:\n")
		for _, c := range components {
			fmt.Fprintf(&b, "  - %s\n", rel(c))
		}
	}
	b.WriteString(extra)
	if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// rows expands one rule of a table: as may (or may not) do each verb on
// each of whats in ns.
func rows(as string, verbs []string, whats []string, ns string, want bool) []canI {
	var out []canI
	for _, v := range verbs {
		for _, w := range whats {
			out = append(out, canI{as: as, verb: v, what: w, ns: ns, want: want})
		}
	}
	return out
}

// set returns table with the rows of changes in place of those about the
// same thing, and appended when there are none.
func set(table []canI, changes ...canI) []canI {
	out := slices.Clone(table)
	for _, c := range changes {
		i := slices.IndexFunc(out, func(r canI) bool {
			return r.as == c.as && r.verb == c.verb && r.what == c.what && r.ns == c.ns && r.sub == c.sub
		})
		if i < 0 {
			out = append(out, c)
		} else {
			out[i] = c
		}
	}
	return out
}

func secretNames(names ...string) []string {
	var out []string
	for _, n := range names {
		out = append(out, "secrets/"+n)
	}
	return out
}

// Secrets of gloo-mesh that no ServiceAccount reads: an Issuer's CA key
// (cert-manager overlays), a Vault token (vault overlays), a
// RootTrustPolicy's root nobody granted, anything else.
var strangers = secretNames("relay-issuer-ca", "vault-token", "root-trust.mesh", "relay-client-issuers", "unrelated")

var read = []string{"get", "list", "watch"}

// serverTable is what relay-server may do with the default management
// install.
func serverTable() []canI {
	t := rows(serverSA, read, secretNames("relay-root-tls-secret", "relay-server-tls-secret", "relay-tls-signing-secret", "relay-identity-token-secret"), "gloo-mesh", true)
	t = append(t, rows(serverSA, read, append(strangers, "secrets", "secrets/relay-client-tls-secret"), "gloo-mesh", false)...)
	// The leader updates the three CA secrets when it rotates what it
	// generated; it never patches or deletes one, nor touches the token.
	t = append(t, rows(serverSA, []string{"update"}, secretNames("relay-root-tls-secret", "relay-tls-signing-secret", "relay-server-tls-secret"), "gloo-mesh", true)...)
	t = append(t, rows(serverSA, []string{"patch", "delete"}, secretNames("relay-root-tls-secret", "relay-tls-signing-secret", "relay-server-tls-secret"), "gloo-mesh", false)...)
	t = append(t, rows(serverSA, []string{"update", "patch", "delete"}, secretNames("relay-identity-token-secret", "relay-client-tls-secret"), "gloo-mesh", false)...)
	t = append(t,
		canI{as: serverSA, verb: "create", what: "relaytrusts.meshrelay.dev", ns: "gloo-mesh", want: true},
		canI{as: serverSA, verb: "patch", what: "relaytrusts.meshrelay.dev", sub: "status", ns: "gloo-mesh", want: true},
		canI{as: serverSA, verb: "update", what: "relaytrusts.meshrelay.dev", ns: "gloo-mesh"},
		canI{as: serverSA, verb: "delete", what: "relaytrusts.meshrelay.dev", ns: "gloo-mesh"},
		canI{as: serverSA, verb: "update", what: "clustertrustbundles.certificates.k8s.io/meshrelay.dev:relay-root:gloo-mesh", want: true},
		canI{as: serverSA, verb: "update", what: "clustertrustbundles.certificates.k8s.io/other", want: false},
		// attest on signer meshrelay.dev/relay-root (a name kubectl auth
		// can-i cannot spell) is exercised by pkg/trustbundle's tests.
	)
	t = append(t,
		canI{as: serverSA, verb: "create", what: "secrets", ns: "gloo-mesh", want: true},
		canI{as: serverSA, verb: "get", what: "secrets", ns: "kube-system"},
		canI{as: serverSA, verb: "get", what: "secrets", ns: "*"},
		canI{as: serverSA, verb: "update", what: "kubernetesclusters.meshrelay.dev", ns: "gloo-mesh", want: true},
		canI{as: serverSA, verb: "create", what: "kubernetesclusters.meshrelay.dev", ns: "gloo-mesh"},
		canI{as: serverSA, verb: "delete", what: "kubernetesclusters.meshrelay.dev", ns: "gloo-mesh"},
		canI{as: serverSA, verb: "update", what: "roottrustpolicies.meshrelay.dev", ns: "gloo-mesh"},
		canI{as: serverSA, verb: "update", what: "roottrustpolicies.meshrelay.dev", sub: "status", ns: "gloo-mesh", want: true},
		canI{as: serverSA, verb: "patch", what: "deployments.apps", ns: "*"},
		// KubernetesCluster status (each replica's entry, the leader's
		// conditions), the leader and replica Leases, Events.
		canI{as: serverSA, verb: "patch", what: "kubernetesclusters.meshrelay.dev", sub: "status", ns: "gloo-mesh", want: true},
		canI{as: serverSA, verb: "patch", what: "kubernetesclusters.meshrelay.dev", ns: "gloo-mesh"},
		canI{as: serverSA, verb: "create", what: "leases.coordination.k8s.io", ns: "gloo-mesh", want: true},
		canI{as: serverSA, verb: "delete", what: "leases.coordination.k8s.io", ns: "gloo-mesh", want: true},
		canI{as: serverSA, verb: "create", what: "leases.coordination.k8s.io", ns: "kube-system"},
		canI{as: serverSA, verb: "create", what: "events.events.k8s.io", ns: "gloo-mesh", want: true},
		canI{as: serverSA, verb: "create", what: "events", ns: "gloo-mesh", want: true},
		canI{as: serverSA, verb: "create", what: "events", ns: "default"},
	)
	t = append(t, rows(serverSA, read, []string{"kubernetesclusters.meshrelay.dev", "roottrustpolicies.meshrelay.dev"}, "gloo-mesh", true)...)
	return t
}

// webhookTable is what relay-webhook may do; selfManaged says whether it
// keeps its own serving certificate (the base) or cert-manager does.
func webhookTable(selfManaged bool) []canI {
	t := rows(webhookSA, read, secretNames("relay-root-tls-secret", "relay-tls-signing-secret", "relay-server-tls-secret", "relay-client-tls-secret"), "gloo-mesh", true)
	t = append(t, rows(webhookSA, read, append(strangers, "secrets", "secrets/relay-identity-token-secret"), "gloo-mesh", false)...)
	t = append(t, rows(webhookSA, []string{"create", "update", "delete"}, []string{"secrets", "secrets/relay-root-tls-secret"}, "gloo-mesh", false)...)
	t = append(t,
		canI{as: webhookSA, verb: "get", what: "secrets", ns: "kube-system"},
		canI{as: webhookSA, verb: "create", what: "secrets", ns: "meshrelay-system", want: selfManaged},
		canI{as: webhookSA, verb: "get", what: "secrets/relay-webhook-tls", ns: "meshrelay-system", want: selfManaged},
		canI{as: webhookSA, verb: "update", what: "secrets/relay-webhook-tls", ns: "meshrelay-system", want: selfManaged},
		canI{as: webhookSA, verb: "delete", what: "secrets/relay-webhook-tls", ns: "meshrelay-system"},
		canI{as: webhookSA, verb: "get", what: "secrets/relay-webhook-cert-manager-tls", ns: "meshrelay-system"},
		canI{as: webhookSA, verb: "list", what: "secrets", ns: "meshrelay-system"},
		canI{as: webhookSA, verb: "get", what: "validatingwebhookconfigurations.admissionregistration.k8s.io/meshrelay-validating", want: selfManaged},
		canI{as: webhookSA, verb: "patch", what: "validatingwebhookconfigurations.admissionregistration.k8s.io/meshrelay-validating", want: selfManaged},
		canI{as: webhookSA, verb: "patch", what: "mutatingwebhookconfigurations.admissionregistration.k8s.io/meshrelay-mutating", want: selfManaged},
		canI{as: webhookSA, verb: "patch", what: "validatingwebhookconfigurations.admissionregistration.k8s.io/someone-elses"},
		canI{as: webhookSA, verb: "list", what: "validatingwebhookconfigurations.admissionregistration.k8s.io"},
		canI{as: webhookSA, verb: "delete", what: "validatingwebhookconfigurations.admissionregistration.k8s.io/meshrelay-validating"},
		// Agent pods made before the injection was in force are evicted.
		canI{as: webhookSA, verb: "list", what: "pods", ns: "gloo-mesh", want: true},
		canI{as: webhookSA, verb: "watch", what: "pods", ns: "gloo-mesh", want: true},
		canI{as: webhookSA, verb: "create", what: "pods", sub: "eviction", ns: "gloo-mesh", want: true},
		canI{as: webhookSA, verb: "create", what: "pods", ns: "gloo-mesh"},
		canI{as: webhookSA, verb: "delete", what: "pods", ns: "gloo-mesh"},
		canI{as: webhookSA, verb: "patch", what: "pods", ns: "gloo-mesh"},
		canI{as: webhookSA, verb: "list", what: "pods", ns: "kube-system"},
	)
	return t
}

// agentTable is what relay-agent may do on a workload cluster; federated
// says whether the istio-federated-trust component is in.
func agentTable(federated bool) []canI {
	t := rows(agentSA, read, secretNames("relay-client-tls-secret", "relay-identity-token-secret"), "gloo-mesh", true)
	// The root secret reaches the agent through its trust bundle volume
	// (the kubelet reads it); the agent only writes a pushed bundle into it.
	t = append(t, rows(agentSA, read, append(strangers, "secrets", "secrets/relay-root-tls-secret", "secrets/relay-tls-signing-secret", "secrets/relay-server-tls-secret"), "gloo-mesh", false)...)
	t = append(t,
		canI{as: agentSA, verb: "patch", what: "secrets/relay-root-tls-secret", ns: "gloo-mesh", want: true},
		canI{as: agentSA, verb: "patch", what: "secrets/relay-client-tls-secret", ns: "gloo-mesh"},
		canI{as: agentSA, verb: "update", what: "clustertrustbundles.certificates.k8s.io/meshrelay.dev:relay-root:gloo-mesh", want: true},
		canI{as: agentSA, verb: "update", what: "clustertrustbundles.certificates.k8s.io/other"},
	)
	t = append(t,
		canI{as: agentSA, verb: "create", what: "secrets", ns: "gloo-mesh", want: true},
		canI{as: agentSA, verb: "update", what: "secrets/relay-client-tls-secret", ns: "gloo-mesh", want: true},
		canI{as: agentSA, verb: "update", what: "secrets/relay-root-tls-secret", ns: "gloo-mesh"},
		canI{as: agentSA, verb: "update", what: "secrets/relay-identity-token-secret", ns: "gloo-mesh"},
		canI{as: agentSA, verb: "delete", what: "secrets/relay-client-tls-secret", ns: "gloo-mesh"},
		canI{as: agentSA, verb: "get", what: "secrets", ns: "kube-system"},
		canI{as: agentSA, verb: "update", what: "leases.coordination.k8s.io", ns: "gloo-mesh", want: true},
		canI{as: agentSA, verb: "create", what: "leases.coordination.k8s.io", ns: "gloo-mesh", want: true},
		canI{as: agentSA, verb: "delete", what: "leases.coordination.k8s.io", ns: "gloo-mesh"},
		canI{as: agentSA, verb: "update", what: "leases.coordination.k8s.io", ns: "kube-system"},
		canI{as: agentSA, verb: "create", what: "events", ns: "gloo-mesh", want: true},
		// No cluster-wide write, with or without federated trust.
		canI{as: agentSA, verb: "patch", what: "deployments.apps", ns: "*"},
		canI{as: agentSA, verb: "patch", what: "statefulsets.apps", ns: "*"},
		canI{as: agentSA, verb: "patch", what: "daemonsets.apps", ns: "*"},
		canI{as: agentSA, verb: "patch", what: "daemonsets.apps", ns: "kube-system"},
		// An injected namespace nobody opted in.
		canI{as: agentSA, verb: "patch", what: "deployments.apps", ns: "bookinfo"},
		canI{as: agentSA, verb: "list", what: "deployments.apps", ns: "bookinfo"},
		canI{as: agentSA, verb: "get", what: "secrets/cacerts", ns: "bookinfo"},
		canI{as: agentSA, verb: "delete", what: "secrets/cacerts", ns: "istio-system"},
		canI{as: agentSA, verb: "get", what: "secrets/istio-ca-secret", ns: "istio-system"},
		canI{as: agentSA, verb: "list", what: "secrets", ns: "istio-system"},
		canI{as: agentSA, verb: "update", what: "namespaces"},
	)
	t = append(t, rows(agentSA, []string{"get", "list", "watch", "update"}, []string{"secrets/cacerts"}, "istio-system", federated)...)
	t = append(t,
		canI{as: agentSA, verb: "create", what: "secrets", ns: "istio-system", want: federated},
		canI{as: agentSA, verb: "list", what: "namespaces", want: federated},
		canI{as: agentSA, verb: "list", what: "deployments.apps", ns: "istio-system", want: federated},
		canI{as: agentSA, verb: "patch", what: "deployments.apps", ns: "istio-system", want: federated},
		canI{as: agentSA, verb: "delete", what: "deployments.apps", ns: "istio-system"},
	)
	return t
}

// TestEveryServiceAccountCanDoOnlyWhatItsRoleNeeds applies the RBAC of
// every overlay (and of the istio-federated-trust component), one at a
// time, to a local cluster and asks kubectl auth can-i, as each
// ServiceAccount, about what its role needs and about what it must not be
// able to do: read a secret it does not need (an Issuer's CA key, a Vault
// token), list the secrets of its namespace, write cluster-wide.
func TestEveryServiceAccountCanDoOnlyWhatItsRoleNeeds(t *testing.T) {
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	env := testenv.Start(t, testenv.Options{Names: []string{"rbac"}})
	ctx := t.Context()
	for _, ns := range []string{"istio-system", "bookinfo"} {
		env.MustKubectl(ctx, t, "", "create", "namespace", ns)
	}
	overlay := func(o string) string { return filepath.Join(root, "manifests", "overlays", o) }
	federated := kustomization(t, root, []string{"overlays/workload"}, []string{"components/istio-federated-trust"}, "")
	// The patch docs/federated-trust.md gives for a policy named mesh.
	rootGranted := kustomization(t, root, []string{"overlays/management"}, nil, `patches:
  - target: {kind: Role, name: relay-server-root-trust}
    patch: |-
      - op: add
        path: /rules/-
        value: {apiGroups: [""], resources: [secrets], verbs: [get], resourceNames: [root-trust.mesh]}
`)
	// Insecure mode signs with an in-memory CA and generates nothing.
	insecureServer := set(serverTable(),
		canI{as: serverSA, verb: "create", what: "secrets", ns: "gloo-mesh"},
		canI{as: serverSA, verb: "update", what: "secrets/relay-root-tls-secret", ns: "gloo-mesh"},
		canI{as: serverSA, verb: "update", what: "secrets/relay-tls-signing-secret", ns: "gloo-mesh"},
		canI{as: serverSA, verb: "update", what: "secrets/relay-server-tls-secret", ns: "gloo-mesh"},
		canI{as: serverSA, verb: "get", what: "secrets/relay-tls-signing-secret", ns: "gloo-mesh"},
		canI{as: serverSA, verb: "list", what: "secrets/relay-tls-signing-secret", ns: "gloo-mesh"},
		canI{as: serverSA, verb: "watch", what: "secrets/relay-tls-signing-secret", ns: "gloo-mesh"},
	)
	// With cert-manager or Vault the server's CA is off, and it admits
	// client certificates from the CAs of relay-client-issuers.
	var cmServer []canI
	for _, v := range read {
		cmServer = append(cmServer,
			canI{as: serverSA, verb: v, what: "secrets/relay-tls-signing-secret", ns: "gloo-mesh"},
			canI{as: serverSA, verb: v, what: "secrets/relay-client-issuers", ns: "gloo-mesh", want: true})
	}
	for _, name := range []string{"relay-root-tls-secret", "relay-tls-signing-secret", "relay-server-tls-secret"} {
		cmServer = append(cmServer, canI{as: serverSA, verb: "update", what: "secrets/" + name, ns: "gloo-mesh"})
	}
	cmServer = set(serverTable(), cmServer...)
	grantedServer := set(serverTable(),
		canI{as: serverSA, verb: "get", what: "secrets/root-trust.mesh", ns: "gloo-mesh", want: true},
		canI{as: serverSA, verb: "get", what: "secrets/root-trust.other", ns: "gloo-mesh"},
	)

	variants := []struct {
		name, dir string
		table     []canI
	}{
		{"management", overlay("management"), append(serverTable(), webhookTable(true)...)},
		{"management with a RootTrustPolicy's root granted", rootGranted, grantedServer},
		{"workload", overlay("workload"), append(agentTable(false), webhookTable(true)...)},
		{"workload with istio-federated-trust", federated, agentTable(true)},
		{"cert-manager/management", overlay("cert-manager/management"), append(cmServer, webhookTable(false)...)},
		{"cert-manager/workload", overlay("cert-manager/workload"), append(agentTable(false), webhookTable(false)...)},
		{"vault/management", overlay("vault/management"), append(cmServer, webhookTable(false)...)},
		{"vault/workload", overlay("vault/workload"), append(agentTable(false), webhookTable(false)...)},
		{"insecure/management", overlay("insecure/management"), insecureServer},
		{"insecure/workload", overlay("insecure/workload"), agentTable(false)},
	}
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			namespaces, rbac := rbacOf(ctx, t, env, v.dir)
			if namespaces != "" {
				env.MustKubectl(ctx, t, namespaces, "apply", "-f", "-")
			}
			env.MustKubectl(ctx, t, rbac, "apply", "-f", "-")
			defer env.MustKubectl(ctx, t, rbac, "delete", "-f", "-")
			for _, c := range v.table {
				if got := allowed(ctx, t, env, c); got != c.want {
					t.Errorf("%s: %v, want %v", c, got, c.want)
				}
			}
		})
	}

	t.Run("opting a namespace in lets relay-agent restart its workloads, and nothing more", func(t *testing.T) {
		_, rbac := rbacOf(ctx, t, env, federated)
		env.MustKubectl(ctx, t, rbac, "apply", "-f", "-")
		defer env.MustKubectl(ctx, t, rbac, "delete", "-f", "-")
		// The opt-in docs/federated-trust.md gives.
		env.MustKubectl(ctx, t, "", "-n", "bookinfo", "create", "rolebinding", "relay-agent-istio-restart",
			"--clusterrole=relay-agent-istio-restart", "--serviceaccount=gloo-mesh:relay-agent")
		for _, c := range []canI{
			{as: agentSA, verb: "list", what: "deployments.apps", ns: "bookinfo", want: true},
			{as: agentSA, verb: "patch", what: "deployments.apps", ns: "bookinfo", want: true},
			{as: agentSA, verb: "patch", what: "statefulsets.apps", ns: "bookinfo", want: true},
			{as: agentSA, verb: "patch", what: "daemonsets.apps", ns: "bookinfo", want: true},
			{as: agentSA, verb: "delete", what: "deployments.apps", ns: "bookinfo"},
			{as: agentSA, verb: "create", what: "deployments.apps", ns: "bookinfo"},
			{as: agentSA, verb: "get", what: "secrets", ns: "bookinfo"},
			{as: agentSA, verb: "patch", what: "deployments.apps", ns: "*"},
			{as: agentSA, verb: "patch", what: "deployments.apps", ns: "default"},
		} {
			if got := allowed(ctx, t, env, c); got != c.want {
				t.Errorf("%s: %v, want %v", c, got, c.want)
			}
		}
	})
}

// asServiceAccounts writes a kubeconfig with one context per entry of
// contexts (name: cluster and ServiceAccount user) that reaches the
// cluster as the administrator impersonating that ServiceAccount, with the
// groups its token would carry: a process given such a context has exactly
// the rights of the ServiceAccount.
func asServiceAccounts(t *testing.T, env *testenv.Env, contexts map[string][2]string) string {
	t.Helper()
	cfg, err := clientcmd.LoadFromFile(env.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	for name, cu := range contexts {
		cluster, user := cu[0], cu[1]
		admin, ok := cfg.AuthInfos[cluster]
		if !ok {
			t.Fatalf("no user for cluster %s in %s", cluster, env.Kubeconfig)
		}
		ns := strings.Split(strings.TrimPrefix(user, "system:serviceaccount:"), ":")[0]
		ai := admin.DeepCopy()
		ai.Impersonate = user
		ai.ImpersonateGroups = []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"}
		cfg.AuthInfos[name] = ai
		cfg.Contexts[name] = &clientcmdapi.Context{Cluster: cluster, AuthInfo: name}
	}
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestBinariesRunWithTheirServiceAccountsRights runs relay-server,
// relay-webhook and relay-agent as their ServiceAccounts, with the RBAC
// of the management and workload overlays and the istio-federated-trust
// component as users apply it: an agent bootstraps and connects, the
// webhook judges a client secret against the root it reads by name, and a
// RootTrustPolicy installs cacerts and restarts istiod and the opted-in
// namespace only, once its root is granted to relay-server. Nothing else
// is refused to any of them.
func TestBinariesRunWithTheirServiceAccountsRights(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	mesh, env := startMesh(ctx, t, testenv.Options{Names: []string{"mgmt", "cluster-1"}})
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	kubectl := func(stdin string, args ...string) string {
		t.Helper()
		return env.MustKubectl(ctx, t, stdin, args...)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	kc := asServiceAccounts(t, env, map[string][2]string{
		"mgmt-server":       {"mgmt", serverSA},
		"mgmt-webhook":      {"mgmt", webhookSA},
		"cluster-1-webhook": {"cluster-1", webhookSA},
		"cluster-1-agent":   {"cluster-1", agentSA},
	})
	free := func() string {
		t.Helper()
		a, err := testenv.FreeAddr()
		must(err)
		return a
	}
	// startWebhook runs relay-webhook on cluster as its ServiceAccount,
	// serving at addr, and waits until it is ready.
	startWebhook := func(cluster, addr string, extra ...string) {
		t.Helper()
		metrics := free()
		args := append([]string{"--kubeconfig", kc, "--context", cluster + "-webhook",
			"--listen-address", addr, "--metrics-address", metrics, "--serving-ip", "127.0.0.1"}, extra...)
		p, err := mesh.Start("relay-webhook", "relay-webhook-"+cluster, args...)
		must(err)
		must(testenv.WaitReady(ctx, p, "http://"+metrics+"/readyz", time.Minute))
	}

	// Management: the overlay as users apply it, then the binaries.
	mgmtHook := free()
	must(mesh.Install(ctx, "mgmt", "management", nil, mgmtHook))
	startWebhook("mgmt", mgmtHook)
	mesh.ServerAddr, mesh.ServerMetrics = free(), free()
	server, err := mesh.Start("relay-server", "relay-server", "--kubeconfig", kc, "--context", "mgmt-server",
		"--listen-address", mesh.ServerAddr, "--metrics-address", mesh.ServerMetrics)
	must(err)
	must(testenv.WaitReady(ctx, server, "http://"+mesh.ServerMetrics+"/readyz", time.Minute))

	// Workload: the overlay, the component's RBAC, one injected namespace
	// opted in to restarts and one not.
	for _, ns := range []string{"istio-system", "bookinfo", "legacy"} {
		kubectl("", "--context", "cluster-1", "create", "namespace", ns)
	}
	kubectl("", "--context", "cluster-1", "label", "namespace", "bookinfo", "istio-injection=enabled")
	kubectl("", "--context", "cluster-1", "label", "namespace", "legacy", "istio.io/rev=1-24")
	for _, d := range [][3]string{{"istiod", "istio-system", "app: istiod"}, {"reviews", "bookinfo", "app: reviews"}, {"ratings", "legacy", "app: ratings"}} {
		kubectl(deployment(d[0], d[1], d[2]), "--context", "cluster-1", "apply", "-f", "-")
	}
	hook := free()
	must(mesh.Install(ctx, "cluster-1", "workload", map[string]string{"MESHRELAY_CLUSTER": "cluster-1", "MESHRELAY_SERVER_ADDRESS": mesh.ServerAddr}, hook))
	kubectl("", "--context", "cluster-1", "apply", "-f", filepath.Join(root, "manifests", "components", "istio-federated-trust", "rbac.yaml"))
	kubectl("", "--context", "cluster-1", "-n", "bookinfo", "create", "rolebinding", "relay-agent-istio-restart",
		"--clusterrole=relay-agent-istio-restart", "--serviceaccount=gloo-mesh:relay-agent")
	startWebhook("cluster-1", hook, "--cluster", "cluster-1", "--server-address", mesh.ServerAddr)
	if _, stderr, code := mesh.Relayctl(ctx, "register", "cluster-1", "--mgmt-context", "mgmt", "--remote-context", "cluster-1"); code != 0 {
		t.Fatalf("relayctl register cluster-1: %s", stderr)
	}
	// relay-agent may not read relay-root-tls-secret: its Deployment
	// mounts the trust bundle (the secret's ca.crt, which register just
	// copied) as a folder, which this process is given as the kubelet
	// would write it.
	trustDir := t.TempDir()
	caCrt, err := base64.StdEncoding.DecodeString(kubectl("", "--context", "cluster-1", "-n", "gloo-mesh", "get", "secret", "relay-root-tls-secret", "-o", `jsonpath={.data.ca\.crt}`))
	must(err)
	must(os.WriteFile(filepath.Join(trustDir, "root-ca.crt"), caCrt, 0o600))
	agentMetrics := free()
	_, err = mesh.Start("relay-agent", "relay-agent-cluster-1", "--kubeconfig", kc, "--context", "cluster-1-agent",
		"--cluster", "cluster-1", "--server-address", mesh.ServerAddr, "--metrics-address", agentMetrics, "--federated-trust",
		"--trust-bundle-dir", trustDir)
	must(err)

	metrics := "http://" + mesh.ServerMetrics + "/metrics"
	t.Run("the agent bootstraps and connects as relay-agent", func(t *testing.T) {
		testenv.Eventually(t, "cluster-1's streams", 90*time.Second, func() error {
			for _, g := range []string{"relay_push_clients_connected", "relay_pull_clients_connected"} {
				if v := testenv.MetricValue(testenv.ScrapeMetric(metrics, g+`{cluster="cluster-1"}`)); v != 1 {
					return fmt.Errorf("%s = %v", g, v)
				}
			}
			return nil
		})
	})
	t.Run("the webhook judges a client secret against the root it reads by name", func(t *testing.T) {
		manifest, err := mesh.ClientSecretFor(ctx, "mgmt", "cluster-9")
		must(err)
		_, stderr, err := env.Kubectl(ctx, manifest, "--context", "cluster-1", "apply", "--dry-run=server", "-f", "-")
		if err == nil || !strings.Contains(stderr, `issue it with DNS name "cluster-1"`) {
			t.Errorf("a cluster-9 certificate on cluster-1: %v\n%s", err, stderr)
		}
	})

	policy := `apiVersion: meshrelay.dev/v1alpha1
kind: RootTrustPolicy
metadata:
  name: mesh
  namespace: gloo-mesh
spec:
  config:
    autoRestartPods: true
    mgmtServerCa:
      generated: {}
`
	ready := func() (string, string) {
		out, _, _ := env.Kubectl(ctx, "", "--context", "mgmt", "-n", "gloo-mesh", "get", "roottrustpolicy", "mesh",
			"-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status} {.status.conditions[?(@.type=="Ready")].message}`)
		status, msg, _ := strings.Cut(out, " ")
		return status, msg
	}
	t.Run("a policy's root not granted to relay-server says which secret to grant", func(t *testing.T) {
		kubectl(policy, "--context", "mgmt", "apply", "-f", "-")
		testenv.Eventually(t, "Ready=False naming root-trust.mesh", 30*time.Second, func() error {
			status, msg := ready()
			if status != "False" || !strings.Contains(msg, `resourceNames ["root-trust.mesh"]`) || !strings.Contains(msg, "relay-server-root-trust") {
				return fmt.Errorf("Ready %q: %s", status, msg)
			}
			return nil
		})
		if _, _, err := env.Kubectl(ctx, "", "--context", "mgmt", "-n", "gloo-mesh", "get", "secret", "root-trust.mesh"); err == nil {
			t.Error("relay-server created the root while it could not read it back")
		}
	})
	t.Run("once granted, cacerts is installed and only istiod and the opted-in namespace restart", func(t *testing.T) {
		must(mesh.InstallPatched(ctx, "mgmt", "management", nil, []localmesh.Patch{{Kind: "Role", Name: "relay-server-root-trust", Patch: `- op: add
  path: /rules/-
  value: {apiGroups: [""], resources: [secrets], verbs: [get], resourceNames: [root-trust.mesh]}
`}}, mgmtHook))
		// relay-server retries a policy every minute; the annotation only
		// saves the wait.
		kubectl("", "--context", "mgmt", "-n", "gloo-mesh", "annotate", "roottrustpolicy", "mesh", "e2e/nudge=1")
		testenv.Eventually(t, "Ready=True", 30*time.Second, func() error {
			if status, msg := ready(); status != "True" {
				return fmt.Errorf("Ready %q: %s", status, msg)
			}
			return nil
		})
		var rev string
		testenv.Eventually(t, "cacerts on cluster-1", 90*time.Second, func() error {
			out, _, err := env.Kubectl(ctx, "", "--context", "cluster-1", "-n", "istio-system", "get", "secret", "cacerts", "-o", `jsonpath={.data.ca-cert\.pem}`)
			if err != nil || out == "" {
				return fmt.Errorf("no cacerts yet: %v", err)
			}
			pemBytes, err := base64.StdEncoding.DecodeString(out)
			if err != nil {
				return err
			}
			ca, err := pki.DecodeCertificate(pemBytes)
			if err != nil {
				return err
			}
			rev = pki.Fingerprint(ca)[:16]
			return nil
		})
		revision := func(ns, name string) string {
			return kubectl("", "--context", "cluster-1", "-n", ns, "get", "deployment", name, "-o",
				`jsonpath={.spec.template.metadata.annotations.meshrelay\.dev/cacerts-revision}`)
		}
		testenv.Eventually(t, "istiod and reviews restarted", 30*time.Second, func() error {
			for _, d := range [][2]string{{"istio-system", "istiod"}, {"bookinfo", "reviews"}} {
				if got := revision(d[0], d[1]); got != rev {
					return fmt.Errorf("%s/%s revision %q, want %s", d[0], d[1], got, rev)
				}
			}
			return nil
		})
		if got := revision("legacy", "ratings"); got != "" {
			t.Errorf("legacy/ratings, not opted in, was restarted (revision %q)", got)
		}
		testenv.Eventually(t, "relay-agent names the namespace it left alone", 10*time.Second, func() error {
			if !strings.Contains(testenv.TailFile(filepath.Join(mesh.Dir, "relay-agent-cluster-1.log"), 200), "legacy") {
				return errors.New("no log line names legacy")
			}
			return nil
		})
	})

	t.Run("nothing else was refused to any of them", func(t *testing.T) {
		logs, err := filepath.Glob(filepath.Join(mesh.Dir, "relay-*.log"))
		must(err)
		if len(logs) != 4 {
			t.Fatalf("logs %v, want relay-server, relay-agent and two relay-webhooks", logs)
		}
		for _, l := range logs {
			data, err := os.ReadFile(l)
			must(err)
			for line := range strings.Lines(string(data)) {
				low := strings.ToLower(line)
				if !strings.Contains(low, "forbidden") && !strings.Contains(low, "cannot list") && !strings.Contains(low, "cannot get") {
					continue
				}
				if filepath.Base(l) == "relay-server.log" && strings.Contains(line, "root-trust.mesh") {
					continue // before the grant, as the subtest above wants
				}
				t.Errorf("%s: %s", filepath.Base(l), strings.TrimSpace(line))
			}
		}
	})
}
