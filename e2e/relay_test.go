package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshrelay/meshrelay/internal/testenv"
	"github.com/meshrelay/meshrelay/pkg/pki"
	"github.com/meshrelay/meshrelay/pkg/relaysecret"
)

// TestIdentityTokenFlowAcrossTwoWorkloadClusters runs relay-server and one
// relay-agent per workload cluster as processes, registers the clusters with
// the manual steps of reference 001 through kubectl, and asserts the eight
// steps of reference 000's identity-token flow for each cluster.
func TestIdentityTokenFlowAcrossTwoWorkloadClusters(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
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
	for _, c := range env.Clusters {
		kubectl("", "--context", c.Name, "create", "namespace", "gloo-mesh")
	}

	// Step 1: installing the management plane creates the identity token.
	if _, err := mesh.StartServer(ctx, "mgmt"); err != nil {
		t.Fatal(err)
	}
	token := secretData("mgmt", "relay-identity-token-secret", "token")
	signingCert, err := pki.DecodeCertificates(secretData("mgmt", "relay-tls-signing-secret", "tls.crt"))
	if err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	for _, cluster := range workloads {
		// Step 2: the token (and the root CA) exist on the workload cluster
		// with the management cluster's values, copied as reference 001 does.
		for _, s := range []struct{ secret, key string }{{"relay-root-tls-secret", "ca.crt"}, {"relay-identity-token-secret", "token"}} {
			path := filepath.Join(dir, cluster+"-"+s.key)
			if err := os.WriteFile(path, secretData("mgmt", s.secret, s.key), 0o600); err != nil {
				t.Fatal(err)
			}
			kubectl("", "--context", cluster, "-n", "gloo-mesh", "create", "secret", "generic", s.secret, "--from-file", s.key+"="+path)
		}
		if got := secretData(cluster, "relay-identity-token-secret", "token"); !bytes.Equal(got, token) {
			t.Fatalf("%s: token differs from the management cluster's", cluster)
		}
		kubectl("apiVersion: meshrelay.dev/v1alpha1\nkind: KubernetesCluster\nmetadata:\n  name: "+cluster+"\n  namespace: gloo-mesh\n",
			"--context", "mgmt", "apply", "-f", "-")
		// Step 3: the agent reads the token and sends it with its CSR.
		if _, _, err := mesh.StartAgent(cluster, cluster); err != nil {
			t.Fatal(err)
		}
	}

	metrics := "http://" + mesh.ServerMetrics + "/metrics"
	// Steps 4 to 6: the server checked both tokens and signed both CSRs.
	testenv.Eventually(t, "two bootstraps signed", 90*time.Second, func() error {
		if v := testenv.MetricValue(testenv.ScrapeMetric(metrics, `relay_certificates_issued_total{call="bootstrap"}`)); v != 2 {
			return fmt.Errorf("bootstraps = %v", v)
		}
		return nil
	})
	for _, cluster := range workloads {
		// Step 7: the agent stored its certificate, signed by relay-tls-signing-secret.
		var v *relaysecret.Material
		testenv.Eventually(t, cluster+" stores relay-client-tls-secret", 30*time.Second, func() (err error) {
			out, _, err := env.Kubectl(ctx, "", "--context", cluster, "-n", "gloo-mesh", "get", "secret", "relay-client-tls-secret", "-o", "jsonpath={.type}")
			if err != nil || out != "kubernetes.io/tls" {
				return fmt.Errorf("type %q: %v", out, err)
			}
			v, err = relaysecret.Load(relaysecret.Client, map[string][]byte{relaysecret.KeyTLSCert: secretData(cluster, "relay-client-tls-secret", "tls.crt"), relaysecret.KeyTLSKey: secretData(cluster, "relay-client-tls-secret", "tls.key"), relaysecret.KeyCACert: secretData(cluster, "relay-client-tls-secret", "ca.crt")}, "", relaysecret.Context{Cluster: cluster, Now: time.Now()})
			return err
		})
		if err := v.Cert.CheckSignatureFrom(signingCert[0]); err != nil {
			t.Errorf("%s: client certificate not signed by relay-tls-signing-secret: %v", cluster, err)
		}
		// Step 8: the agent connects with mTLS: one push and one pull stream.
		testenv.Eventually(t, cluster+" relay metrics read 1", 60*time.Second, func() error {
			for _, g := range []string{"relay_push_clients_connected", "relay_pull_clients_connected"} {
				if v := testenv.MetricValue(testenv.ScrapeMetric(metrics, g+`{cluster="`+cluster+`"}`)); v != 1 {
					return fmt.Errorf("%s = %v", g, v)
				}
			}
			return nil
		})
		if holder := kubectl("", "--context", cluster, "-n", "gloo-mesh", "get", "lease", "relay-agent-"+cluster, "-o", "jsonpath={.spec.holderIdentity}"); holder == "" {
			t.Errorf("%s: the agent holds no Lease: the rotator must run only on the leader", cluster)
		}
	}
}
