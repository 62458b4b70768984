package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	grpccreds "google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/meshrelay/meshrelay/internal/testenv"
	"github.com/meshrelay/meshrelay/pkg/bootstraptoken"
	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/pkg/pki"
	"github.com/meshrelay/meshrelay/pkg/relaysecret"
	relayv1 "github.com/meshrelay/meshrelay/relay/api/v1"
)

// TestIdentityTokenFlowAcrossTwoWorkloadClusters installs the management
// and workload overlays and runs relay-server, relay-webhook and one
// relay-agent per workload cluster as their Deployments say. cluster-1 is registered by
// hand with the shared identity token (kubectl copies it and the root), and
// cluster-2 with relayctl register, which gives it a token of its own. Both
// agents bootstrap and connect over mutual TLS. Then: cluster-2's token, used
// or unused, cannot get a certificate for cluster-1, whether cluster-1 has
// bootstrapped or not; the shared token bootstraps cluster-1 only once; a
// fresh token replaces a certificate that is still valid; and an agent whose
// certificate expired recovers, without a restart, once relayctl register
// issues its cluster a fresh token.
func TestIdentityTokenFlowAcrossTwoWorkloadClusters(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 6*time.Minute)
	defer cancel()
	workloads := []string{"cluster-1", "cluster-2"}
	mesh, env := startMesh(ctx, t, testenv.Options{Names: append([]string{"mgmt"}, workloads...)})
	kubectl := func(stdin string, args ...string) string {
		t.Helper()
		return env.MustKubectl(ctx, t, stdin, args...)
	}
	secretData := func(kctx, name, key string) []byte {
		t.Helper()
		enc := kubectl("", "--context", kctx, "-n", "gloo-mesh", "get", "secret", name, "-o", "jsonpath={.data."+strings.ReplaceAll(key, ".", `\.`)+"}")
		raw, err := base64.StdEncoding.DecodeString(enc)
		if err != nil || len(raw) == 0 {
			t.Fatalf("%s: secret %s key %s: %q %v", kctx, name, key, enc, err)
		}
		return raw
	}
	annotation := func(cluster, key string) string {
		t.Helper()
		return kubectl("", "--context", "mgmt", "-n", "gloo-mesh", "get", "kubernetescluster", cluster, "-o", "jsonpath={.metadata.annotations."+strings.NewReplacer(".", `\.`, "/", `\/`).Replace(key)+"}")
	}
	register := func(cluster string) string {
		t.Helper()
		stdout, stderr, code := mesh.Relayctl(ctx, "register", cluster, "--mgmt-context", "mgmt", "--remote-context", cluster)
		if code != 0 {
			t.Fatalf("relayctl register %s: exit %d: %s", cluster, code, stderr)
		}
		if !strings.Contains(stdout, "its bootstrap token is single use and expires at ") {
			t.Errorf("relayctl register %s does not say when the token expires:\n%s", cluster, stdout)
		}
		return string(secretData(cluster, "relay-identity-token-secret", "token"))
	}
	// The overlays as users apply them; the binaries run as their
	// Deployments say, with their ServiceAccounts' tokens.
	webhooks := map[string]string{}
	for _, c := range env.Clusters {
		addr, err := testenv.FreeAddr()
		if err != nil {
			t.Fatal(err)
		}
		webhooks[c.Name] = addr
	}
	if err := mesh.Install(ctx, "mgmt", "management", nil, webhooks["mgmt"]); err != nil {
		t.Fatal(err)
	}
	if _, err := mesh.StartWebhook(ctx, "mgmt", "", webhooks["mgmt"]); err != nil {
		t.Fatal(err)
	}
	// Installing the management plane creates the root, the signing CA and
	// the shared identity token.
	if _, err := mesh.StartServer(ctx, "mgmt"); err != nil {
		t.Fatal(err)
	}
	for _, c := range workloads {
		if err := mesh.Install(ctx, c, "workload", map[string]string{config.EnvCluster: c, config.EnvServerAddress: mesh.ServerAddr}, webhooks[c]); err != nil {
			t.Fatal(err)
		}
		if _, err := mesh.StartWebhook(ctx, c, c, webhooks[c]); err != nil {
			t.Fatal(err)
		}
	}
	shared := secretData("mgmt", "relay-identity-token-secret", "token")
	signingCert, err := pki.DecodeCertificates(secretData("mgmt", "relay-tls-signing-secret", "tls.crt"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(secretData("mgmt", "relay-root-tls-secret", "ca.crt"))
	// bootstrapAs calls Bootstrap as an agent would: over TLS with the root
	// pinned and SNI = the authority.
	bootstrapAs := func(cluster, token string) error {
		conn, err := grpc.NewClient(mesh.ServerAddr, grpc.WithTransportCredentials(grpccreds.NewTLS(&tls.Config{RootCAs: roots, ServerName: config.DefaultAuthority, MinVersion: tls.VersionTLS12})))
		if err != nil {
			return err
		}
		defer conn.Close()
		key, _ := pki.GenerateKey(pki.ECDSAP256)
		csr, _ := pki.NewCSR(key, cluster)
		_, err = relayv1.NewRelayClient(conn).Bootstrap(ctx, &relayv1.BootstrapRequest{Cluster: cluster, Token: token, Csr: csr})
		return err
	}
	wantRefused := func(t *testing.T, err error, msg string) {
		t.Helper()
		if status.Code(err) != codes.Unauthenticated || !strings.Contains(status.Convert(err).Message(), msg) {
			t.Errorf("Bootstrap: %v, want Unauthenticated containing %q", err, msg)
		}
	}

	// cluster-1, by hand: the root and the shared token copied with kubectl.
	dir := t.TempDir()
	for _, s := range []struct{ secret, key string }{{"relay-root-tls-secret", "ca.crt"}, {"relay-identity-token-secret", "token"}} {
		path := filepath.Join(dir, s.key)
		if err := os.WriteFile(path, secretData("mgmt", s.secret, s.key), 0o600); err != nil {
			t.Fatal(err)
		}
		kubectl("", "--context", "cluster-1", "-n", "gloo-mesh", "create", "secret", "generic", s.secret, "--from-file", s.key+"="+path)
	}
	kubectl("apiVersion: meshrelay.dev/v1alpha1\nkind: KubernetesCluster\nmetadata:\n  name: cluster-1\n  namespace: gloo-mesh\n", "--context", "mgmt", "apply", "-f", "-")
	// cluster-2, with relayctl register: a token of its own.
	token2 := register("cluster-2")

	t.Run("cluster-2's token is its own, and the management cluster keeps only its hash", func(t *testing.T) {
		if token2 == string(shared) {
			t.Fatal("relayctl register copied the shared token")
		}
		if got := annotation("cluster-2", "meshrelay.dev/bootstrap-token-sha256"); got != bootstraptoken.Hash(token2) {
			t.Errorf("hash annotation %q, want the SHA-256 of the workload token", got)
		}
		if out := kubectl("", "--context", "mgmt", "-n", "gloo-mesh", "get", "kubernetescluster", "cluster-2", "-o", "yaml"); strings.Contains(out, token2) {
			t.Error("the KubernetesCluster holds the token itself")
		}
	})
	t.Run("cluster-2's token cannot get cluster-1's certificate while cluster-1 has not bootstrapped", func(t *testing.T) {
		wantRefused(t, bootstrapAs("cluster-1", token2), "the bootstrap token is not valid for cluster cluster-1")
	})

	agents := map[string]*testenv.Process{}
	for _, cluster := range workloads {
		if agents[cluster], _, err = mesh.StartAgent(cluster, cluster); err != nil {
			t.Fatal(err)
		}
	}
	metrics := "http://" + mesh.ServerMetrics + "/metrics"
	bootstraps := func(n float64) {
		t.Helper()
		testenv.Eventually(t, fmt.Sprintf("%v bootstraps signed", n), 90*time.Second, func() error {
			if v := testenv.MetricValue(testenv.ScrapeMetric(metrics, `relay_certificates_issued_total{call="bootstrap"}`)); v != n {
				return fmt.Errorf("bootstraps = %v", v)
			}
			return nil
		})
	}
	clientCert := func(cluster string) (v *relaysecret.Material, err error) {
		out, _, err := env.Kubectl(ctx, "", "--context", cluster, "-n", "gloo-mesh", "get", "secret", "relay-client-tls-secret", "-o", "jsonpath={.type}")
		if err != nil || out != "kubernetes.io/tls" {
			return nil, fmt.Errorf("type %q: %v", out, err)
		}
		return relaysecret.Load(relaysecret.Client, map[string][]byte{relaysecret.KeyTLSCert: secretData(cluster, "relay-client-tls-secret", "tls.crt"), relaysecret.KeyTLSKey: secretData(cluster, "relay-client-tls-secret", "tls.key"), relaysecret.KeyCACert: secretData(cluster, "relay-client-tls-secret", "ca.crt")}, "", relaysecret.Context{Cluster: cluster, Now: time.Now()})
	}
	connected := func(cluster string) {
		t.Helper()
		testenv.Eventually(t, cluster+" relay metrics read 1", 60*time.Second, func() error {
			for _, g := range []string{"relay_push_clients_connected", "relay_pull_clients_connected"} {
				if v := testenv.MetricValue(testenv.ScrapeMetric(metrics, g+`{cluster="`+cluster+`"}`)); v != 1 {
					return fmt.Errorf("%s = %v", g, v)
				}
			}
			return nil
		})
	}

	t.Run("both agents bootstrap, store certificates signed by relay-tls-signing-secret, and connect over mTLS", func(t *testing.T) {
		bootstraps(2)
		for _, cluster := range workloads {
			var v *relaysecret.Material
			testenv.Eventually(t, cluster+" stores relay-client-tls-secret", 30*time.Second, func() (err error) {
				v, err = clientCert(cluster)
				return err
			})
			if err := v.Cert.CheckSignatureFrom(signingCert[0]); err != nil {
				t.Errorf("%s: client certificate not signed by relay-tls-signing-secret: %v", cluster, err)
			}
			connected(cluster)
			if holder := kubectl("", "--context", cluster, "-n", "gloo-mesh", "get", "lease", "relay-agent-"+cluster, "-o", "jsonpath={.spec.holderIdentity}"); holder == "" {
				t.Errorf("%s: the agent holds no Lease: the rotator must run only on the leader", cluster)
			}
			if annotation(cluster, "meshrelay.dev/bootstrapped") == "" {
				t.Errorf("%s: no meshrelay.dev/bootstrapped annotation after its bootstrap", cluster)
			}
		}
		if got := annotation("cluster-2", "meshrelay.dev/bootstrap-token-sha256"); got != "" {
			t.Errorf("cluster-2's token record is still there after its use: %q", got)
		}
	})

	t.Run("cluster-2's tokens, spent or fresh, cannot get cluster-1's certificate once cluster-1 has bootstrapped", func(t *testing.T) {
		wantRefused(t, bootstrapAs("cluster-1", token2), "the bootstrap token is not valid for cluster cluster-1")
		// Stopped, cluster-2's agent leaves its fresh token unused.
		if err := agents["cluster-2"].Stop(); err != nil {
			t.Fatal(err)
		}
		fresh := register("cluster-2")
		wantRefused(t, bootstrapAs("cluster-1", fresh), "the bootstrap token is not valid for cluster cluster-1")
		if got := annotation("cluster-2", "meshrelay.dev/bootstrap-token-sha256"); got != bootstraptoken.Hash(fresh) {
			t.Errorf("the refused attempt touched cluster-2's fresh token: hash %q", got)
		}
	})

	t.Run("a fresh token replaces a certificate that is still valid: cluster-2's agent bootstraps with it when it starts", func(t *testing.T) {
		if agents["cluster-2"], _, err = mesh.StartAgent("cluster-2", "cluster-2"); err != nil {
			t.Fatal(err)
		}
		bootstraps(3)
		connected("cluster-2")
		if got := annotation("cluster-2", "meshrelay.dev/bootstrap-token-sha256"); got != "" {
			t.Errorf("cluster-2's fresh token is still unused: %q", got)
		}
	})

	t.Run("the shared token bootstraps cluster-1 only once", func(t *testing.T) {
		wantRefused(t, bootstrapAs("cluster-1", string(shared)), "bootstraps a cluster only once")
	})

	t.Run("an agent whose certificate expired is refused with the fix, and recovers without a restart once relayctl register issues a fresh token", func(t *testing.T) {
		signing, err := relaysecret.Load(relaysecret.Signing, map[string][]byte{relaysecret.KeyTLSCert: secretData("mgmt", "relay-tls-signing-secret", "tls.crt"), relaysecret.KeyTLSKey: secretData("mgmt", "relay-tls-signing-secret", "tls.key"), relaysecret.KeyCACert: secretData("mgmt", "relay-tls-signing-secret", "ca.crt")}, "", relaysecret.Context{Now: time.Now()})
		if err != nil {
			t.Fatal(err)
		}
		// relay-webhook admits no expired certificate, so the secret gets
		// one with seconds left while the agent is stopped (it would renew
		// it), and the agent starts again once it has expired.
		if err := agents["cluster-1"].Stop(); err != nil {
			t.Fatal(err)
		}
		// Signed as relay-server signs, bound to cluster-1's
		// KubernetesCluster: the agent replaces only such a certificate.
		at := time.Now().Add(-time.Minute)
		iss, err := pki.NewIssuer(signing.Certified(), pki.Policy{Role: pki.RoleClient, TTL: time.Minute + 15*time.Second}, at)
		if err != nil {
			t.Fatal(err)
		}
		key, _ := pki.GenerateKey(pki.ECDSAP256)
		csrPEM, _ := pki.NewCSR(key, "cluster-1")
		csr, _ := pki.DecodeCSR(csrPEM)
		uid := strings.TrimSpace(kubectl("", "--context", "mgmt", "-n", "gloo-mesh", "get", "kubernetescluster", "cluster-1", "-o", "jsonpath={.metadata.uid}"))
		old, err := iss.Sign(csr, pki.Identity{DNSNames: []string{"cluster-1"}, ClusterUID: uid}, at)
		if err != nil {
			t.Fatal(err)
		}
		keyPEM, _ := pki.EncodePrivateKey(key)
		patch := fmt.Sprintf(`{"data":{"tls.crt":%q,"tls.key":%q}}`, base64.StdEncoding.EncodeToString(old.CertPEM), base64.StdEncoding.EncodeToString(keyPEM))
		kubectl("", "--context", "cluster-1", "-n", "gloo-mesh", "patch", "secret", "relay-client-tls-secret", "--type", "merge", "-p", patch)
		time.Sleep(time.Until(old.Cert.NotAfter) + time.Second)
		if agents["cluster-1"], _, err = mesh.StartAgent("cluster-1", "cluster-1"); err != nil {
			t.Fatal(err)
		}
		agentLog := filepath.Join(mesh.Dir, "relay-agent-cluster-1.log")
		testenv.Eventually(t, "the agent logs the refusal with its fix", 60*time.Second, func() error {
			b, _ := os.ReadFile(agentLog)
			for _, want := range []string{"relay server refused to issue a client certificate", "bootstraps a cluster only once", "relayctl register cluster-1"} {
				if !strings.Contains(string(b), want) {
					return fmt.Errorf("agent log lacks %q", want)
				}
			}
			return nil
		})
		register("cluster-1")
		testenv.Eventually(t, "cluster-1 stores a valid certificate again", 60*time.Second, func() error {
			_, err := clientCert("cluster-1")
			return err
		})
		bootstraps(4) // both agents, cluster-2's fresh token, then this one
		connected("cluster-1")
		if got := annotation("cluster-1", "meshrelay.dev/bootstrap-token-sha256"); got != "" {
			t.Errorf("cluster-1's fresh token is still unused: %q", got)
		}
	})

	t.Run("relayctl check warns while the shared token exists", func(t *testing.T) {
		stdout, stderr, _ := mesh.Relayctl(ctx, "check", "--mgmt-context", "mgmt", "--remote-context", "cluster-1", "--remote-context", "cluster-2", "--server-metrics", metrics)
		if want := "WARNING management: secret gloo-mesh/relay-identity-token-secret: the shared identity token exists"; !strings.Contains(stdout, want) {
			t.Errorf("relayctl check output lacks %q:\n%s%s", want, stdout, stderr)
		}
	})
}
