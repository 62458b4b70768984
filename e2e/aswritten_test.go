package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/meshrelay/meshrelay/internal/localmesh"
	"github.com/meshrelay/meshrelay/internal/testenv"
	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/pkg/pki"
)

// TestManifestsAsWrittenFailWhenBroken shows that the binaries run as the
// management overlay's Deployments say, with their ServiceAccounts'
// tokens: a flag the binary does not know, added to relay-server's
// Deployment, stops it at start with the flag named; relay-server's Role
// without its kubernetesclusters/status rule makes its status writes
// forbidden, which its log says; and the overlay as written repairs both.
func TestManifestsAsWrittenFailWhenBroken(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 6*time.Minute)
	defer cancel()
	mesh, env := startMesh(ctx, t, testenv.Options{Names: []string{"mgmt"}})
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	hook, err := testenv.FreeAddr()
	must(err)
	statusRule := statusRuleIndex(ctx, t, env, mesh.Root)

	t.Run("an unknown flag in relay-server's Deployment stops it at start, naming the flag", func(t *testing.T) {
		must(mesh.InstallPatched(ctx, "mgmt", "management", nil, []localmesh.Patch{{Kind: "Deployment", Name: "gloo-mesh-mgmt-server",
			Patch: "- op: add\n  path: /spec/template/spec/containers/0/args/-\n  value: --no-such-flag\n"}}, hook))
		_, err := mesh.StartWebhook(ctx, "mgmt", "", hook)
		must(err)
		_, err = mesh.StartServer(ctx, "mgmt")
		if err == nil || !strings.Contains(err.Error(), "exited before it was ready") || !strings.Contains(err.Error(), "unknown flag: --no-such-flag") {
			t.Fatalf("relay-server with --no-such-flag in its Deployment: %v, want an exit naming the flag", err)
		}
	})

	t.Run("relay-server's Role without kubernetesclusters/status makes its status writes forbidden, in its log", func(t *testing.T) {
		must(mesh.InstallPatched(ctx, "mgmt", "management", nil, []localmesh.Patch{{Kind: "Role", Name: "relay-server",
			Patch: fmt.Sprintf("- op: test\n  path: /rules/%d/resources/0\n  value: kubernetesclusters/status\n- op: remove\n  path: /rules/%d\n", statusRule, statusRule)}}, hook))
		server, err := mesh.StartServer(ctx, "mgmt")
		must(err)
		env.MustKubectl(ctx, t, "apiVersion: meshrelay.dev/v1alpha1\nkind: KubernetesCluster\nmetadata:\n  name: cluster-1\n  namespace: gloo-mesh\n", "--context", "mgmt", "apply", "-f", "-")
		testenv.Eventually(t, "relay-server logs its status write as forbidden", 60*time.Second, func() error {
			b, _ := os.ReadFile(server.Log)
			for _, want := range []string{"forbidden", "system:serviceaccount:gloo-mesh:relay-server", "kubernetesclusters/status"} {
				if !strings.Contains(string(b), want) {
					return fmt.Errorf("relay-server's log lacks %q", want)
				}
			}
			return nil
		})
		if out := env.MustKubectl(ctx, t, "", "--context", "mgmt", "-n", "gloo-mesh", "get", "kubernetescluster", "cluster-1", "-o", "jsonpath={.status.conditions}"); out != "" {
			t.Errorf("relay-server wrote status without the rule: %s", out)
		}
		must(server.Stop())
	})

	t.Run("the overlay as written runs: relay-server writes the cluster's status", func(t *testing.T) {
		must(mesh.Install(ctx, "mgmt", "management", nil, hook))
		_, err := mesh.StartServer(ctx, "mgmt")
		must(err)
		testenv.Eventually(t, "cluster-1's status conditions", 60*time.Second, func() error {
			out, _, err := env.Kubectl(ctx, "", "--context", "mgmt", "-n", "gloo-mesh", "get", "kubernetescluster", "cluster-1", "-o", "jsonpath={.status.conditions[*].type}")
			if err != nil || !strings.Contains(out, "Registered") {
				return fmt.Errorf("conditions %q (%v)", out, err)
			}
			return nil
		})
	})
}

// statusRuleIndex returns the index of the kubernetesclusters/status rule
// in relay-server's Role as the management overlay renders it.
func statusRuleIndex(ctx context.Context, t *testing.T, env *testenv.Env, root string) int {
	t.Helper()
	objs, err := localmesh.Objects(env.MustKubectl(ctx, t, "", "kustomize", filepath.Join(root, "manifests", "overlays", "management")))
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range objs {
		if u.GetKind() != "Role" || u.GetName() != "relay-server" {
			continue
		}
		rules, _, _ := unstructured.NestedSlice(u.Object, "rules")
		for i, r := range rules {
			res, _, _ := unstructured.NestedStringSlice(r.(map[string]any), "resources")
			if slices.Equal(res, []string{"kubernetesclusters/status"}) {
				return i
			}
		}
	}
	t.Fatal("the management overlay's Role relay-server has no rule for kubernetesclusters/status alone")
	return -1
}

// TestInsecureOverlaysRunAsWritten installs insecure/management and
// insecure/workload as users apply them and runs relay-webhook,
// relay-server and relay-agent as their Deployments say, with their
// ServiceAccounts' tokens: the agent registers, connects over plaintext
// gRPC, and relay-server counts its streams.
func TestInsecureOverlaysRunAsWritten(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 6*time.Minute)
	defer cancel()
	mesh, env := startMesh(ctx, t, testenv.Options{Names: []string{"mgmt", "cluster-1"}})
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	hooks := map[string]string{}
	for _, c := range []string{"mgmt", "cluster-1"} {
		var err error
		hooks[c], err = testenv.FreeAddr()
		must(err)
	}
	must(mesh.Install(ctx, "mgmt", "insecure/management", nil, hooks["mgmt"]))
	_, err := mesh.StartWebhook(ctx, "mgmt", "", hooks["mgmt"])
	must(err)
	server, err := mesh.StartServer(ctx, "mgmt")
	must(err)
	must(mesh.Install(ctx, "cluster-1", "insecure/workload", map[string]string{"MESHRELAY_CLUSTER": "cluster-1", "MESHRELAY_SERVER_ADDRESS": mesh.ServerAddr}, hooks["cluster-1"]))
	_, err = mesh.StartWebhook(ctx, "cluster-1", "cluster-1", hooks["cluster-1"])
	must(err)
	env.MustKubectl(ctx, t, "apiVersion: meshrelay.dev/v1alpha1\nkind: KubernetesCluster\nmetadata:\n  name: cluster-1\n  namespace: gloo-mesh\n", "--context", "mgmt", "apply", "-f", "-")
	agent, _, err := mesh.StartAgent("cluster-1", "cluster-1")
	must(err)

	for _, p := range []*testenv.Process{server, agent} {
		if b, _ := os.ReadFile(p.Log); strings.Contains(string(b), "forbidden") {
			t.Errorf("%s was refused by the API server as its ServiceAccount:\n%s", p.Name, p.Tail(20))
		}
	}
	metrics := "http://" + mesh.ServerMetrics + "/metrics"
	testenv.Eventually(t, "cluster-1 connects to the insecure relay-server", 90*time.Second, func() error {
		for _, g := range []string{"relay_push_clients_connected", "relay_pull_clients_connected"} {
			if v := testenv.MetricValue(testenv.ScrapeMetric(metrics, g+`{cluster="cluster-1"}`)); v != 1 {
				return fmt.Errorf("%s = %v", g, v)
			}
		}
		return nil
	})
	for _, p := range []*testenv.Process{server, agent} {
		if b, _ := os.ReadFile(p.Log); strings.Contains(string(b), "forbidden") {
			t.Errorf("%s was refused by the API server as its ServiceAccount:\n%s", p.Name, p.Tail(20))
		}
	}
}

// vaultAsCA stands a CA Issuer over relay-issuer-ca in for the vault
// overlays' Vault Issuer, the one object in which they differ from the
// cert-manager overlays.
var vaultAsCA = localmesh.Patch{Kind: "Issuer", Name: "relay-issuer", Patch: `- op: remove
  path: /spec/vault
- op: add
  path: /spec/ca
  value: {secretName: relay-issuer-ca}
`}

// TestVaultOverlaysRunAsWritten installs vault/management and
// vault/workload as users apply them, with a CA Issuer standing in for
// Vault, on clusters running cert-manager's controller, and runs
// relay-webhook, relay-server and relay-agent as their Deployments say,
// with their ServiceAccounts' tokens: relay-webhook serves from the secret
// its Deployment mounts, cert-manager issues the relay certificates, and
// the agent connects with its cert-manager client certificate.
func TestVaultOverlaysRunAsWritten(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 8*time.Minute)
	defer cancel()
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	clusters := []string{"mgmt", "cluster-1"}
	mesh, env := startMesh(ctx, t, testenv.Options{Names: clusters, CRDDirs: []string{filepath.Join(root, "manifests", "crds")}, CertManager: true})
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	ca, err := pki.NewRootCA(pki.Options{CommonName: "meshrelay test root CA", TTL: time.Hour})
	must(err)
	inter, err := ca.NewIntermediateCA(pki.Options{CommonName: "gloo-mesh-mgmt-server-ca", TTL: time.Hour})
	must(err)
	issuerCA, err := issuerSecret(inter)
	must(err)
	hooks := map[string]string{}
	for _, c := range clusters {
		env.MustKubectl(ctx, t, "", "--context", c, "create", "namespace", config.DefaultNamespace)
		env.MustKubectl(ctx, t, issuerCA, "--context", c, "apply", "-f", "-")
		hooks[c], err = testenv.FreeAddr()
		must(err)
	}
	for name, cert := range map[string]*x509.Certificate{config.DefaultRootTLSSecret: ca.Cert, "relay-client-issuers": inter.Cert} {
		doc, err := certificateSecret(name, cert)
		must(err)
		env.MustKubectl(ctx, t, doc, "--context", "mgmt", "apply", "-f", "-")
	}

	must(mesh.InstallPatched(ctx, "mgmt", "vault/management", nil, []localmesh.Patch{vaultAsCA}, hooks["mgmt"]))
	webhook, err := mesh.StartWebhook(ctx, "mgmt", "", hooks["mgmt"])
	must(err)
	server, err := mesh.StartServer(ctx, "mgmt")
	must(err)
	must(mesh.InstallPatched(ctx, "cluster-1", "vault/workload", map[string]string{config.EnvCluster: "cluster-1", config.EnvServerAddress: mesh.ServerAddr}, []localmesh.Patch{vaultAsCA}, hooks["cluster-1"]))
	_, err = mesh.StartWebhook(ctx, "cluster-1", "cluster-1", hooks["cluster-1"])
	must(err)
	env.MustKubectl(ctx, t, "apiVersion: meshrelay.dev/v1alpha1\nkind: KubernetesCluster\nmetadata:\n  name: cluster-1\n  namespace: gloo-mesh\n", "--context", "mgmt", "apply", "-f", "-")
	testenv.Eventually(t, "cert-manager issues relay-client-tls-secret on cluster-1", 90*time.Second, func() error {
		_, err := secretCertificate(ctx, env, "cluster-1", config.DefaultClientTLSSecret, pki.RoleClient, ca.Cert)
		return err
	})
	agent, _, err := mesh.StartAgent("cluster-1", "cluster-1")
	must(err)

	t.Run("relay-webhook serves the files of the secret its Deployment mounts, not a certificate of its own", func(t *testing.T) {
		// localmesh puts a pair for 127.0.0.1 in place of cert-manager's
		// in the mounted folder; a self-managed webhook would serve one
		// from its own CA instead.
		conn, err := tls.Dial("tcp", hooks["mgmt"], &tls.Config{InsecureSkipVerify: true})
		must(err)
		defer conn.Close()
		if got := conn.ConnectionState().PeerCertificates[0].Issuer.CommonName; got != localmesh.LocalWebhookCA {
			t.Errorf("relay-webhook serves a certificate issued by %q, not the files of its mounted secret", got)
		}
	})
	t.Run("the agent connects with its cert-manager client certificate", func(t *testing.T) {
		metrics := "http://" + mesh.ServerMetrics + "/metrics"
		testenv.Eventually(t, "cluster-1's streams", 90*time.Second, func() error {
			for _, g := range []string{"relay_push_clients_connected", "relay_pull_clients_connected"} {
				if v := testenv.MetricValue(testenv.ScrapeMetric(metrics, g+`{cluster="cluster-1"}`)); v != 1 {
					return fmt.Errorf("%s = %v", g, v)
				}
			}
			return nil
		})
	})
	for _, p := range []*testenv.Process{webhook, server, agent} {
		if b, _ := os.ReadFile(p.Log); strings.Contains(string(b), "forbidden") {
			t.Errorf("%s was refused by the API server as its ServiceAccount:\n%s", p.Name, p.Tail(20))
		}
	}
}
