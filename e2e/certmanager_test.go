package e2e

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/yaml"

	"github.com/meshrelay/meshrelay/internal/localmesh"
	"github.com/meshrelay/meshrelay/internal/testenv"
	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/pkg/pki"
	"github.com/meshrelay/meshrelay/pkg/relaysecret"
)

// The lifetime the renewal step gives the relay certificates, by a patch on
// top of the cert-manager overlays (which keep the documented 24h duration
// and 30m renewBefore of the cert-manager and Vault setup):
// cert-manager renews each certificate renewBefore ahead of its expiry, here
// every 40 seconds. cert-manager's own webhook, which would refuse less than
// an hour, is not part of the setup; its controller honours any duration.
const (
	shortDuration    = 2 * time.Minute
	shortRenewBefore = 80 * time.Second
	// renewalsToWatch is how many renewals after the reissue with the
	// short lifetime each certificate must go through, every one loaded by
	// the server and the agents.
	renewalsToWatch = 2
)

// TestCertManagerIssuesAndRenewsTheRelayCertificates is the bring-your-own
// PKI setup (cert-manager issues the relay server and client certificates) on
// local clusters, with cert-manager's real controller on each and a CA
// Issuer over a root and intermediate made for the test in place of Vault.
// It applies the cert-manager overlays users apply, then asserts that
// cert-manager issues relay-server-tls-secret and each workload's
// relay-client-tls-secret while relay-webhook checks every write; that
// relay-server (disableCa, disableCaCertGeneration, disableTokenGeneration)
// and the agents connect with them, the agents only watching their secret;
// that the webhook refuses Certificates with an underscore name or another
// cluster's name; and, once a patch shortens the lifetime, that every
// renewal is loaded by the server and the agents without a stream being
// reopened, while relayctl check passes throughout.
func TestCertManagerIssuesAndRenewsTheRelayCertificates(t *testing.T) {
	// testenv.Start fails, naming make cert-manager, when the controller
	// or its CRDs are missing.
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 12*time.Minute)
	defer cancel()
	workloads := []string{"cluster-1", "cluster-2"}
	clusters := append([]string{"mgmt"}, workloads...)
	mesh, env := startMesh(ctx, t, testenv.Options{
		Names:       clusters,
		CRDDirs:     []string{filepath.Join(root, "manifests", "crds")},
		CertManager: true,
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
	secretFor := map[string]string{"mgmt": config.DefaultServerTLSSecret}
	certificateFor := map[string]string{"mgmt": "relay-server-tls"}
	for _, c := range workloads {
		secretFor[c], certificateFor[c] = config.DefaultClientTLSSecret, "relay-client-tls"
	}

	// The stand-in for Vault: a root, and an intermediate that signs as
	// Vault's pki_relay does. Every cluster's relay-issuer-ca holds the
	// intermediate above the root, so cert-manager writes the root as
	// ca.crt beside each certificate.
	ca, err := pki.NewRootCA(pki.Options{CommonName: "meshrelay test root CA", TTL: time.Hour})
	must(err)
	inter, err := ca.NewIntermediateCA(pki.Options{CommonName: "gloo-mesh-mgmt-server-ca", TTL: time.Hour})
	must(err)
	issuerCA, err := issuerSecret(inter)
	must(err)
	for _, c := range clusters {
		_, _, err := kubectl("", "--context", c, "create", "namespace", config.DefaultNamespace)
		must(err)
		_, _, err = kubectl(issuerCA, "--context", c, "apply", "-f", "-")
		must(err)
	}
	// The management overlay's relay-server verifies agents against
	// relay-root-tls-secret's ca.crt alone and admits client certificates
	// only from the CA listed in relay-client-issuers (its
	// clientIssuerSecret): certificates only, as docs/cert-manager.md says.
	for name, cert := range map[string]*x509.Certificate{config.DefaultRootTLSSecret: ca.Cert, "relay-client-issuers": inter.Cert} {
		doc, err := certificateSecret(name, cert)
		must(err)
		_, _, err = kubectl(doc, "--context", "mgmt", "apply", "-f", "-")
		must(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)

	webhooks := map[string]string{}
	for _, c := range clusters {
		webhooks[c], err = testenv.FreeAddr()
		must(err)
	}
	settings := func(c string) map[string]string {
		return map[string]string{config.EnvCluster: c, "MESHRELAY_SERVER_ADDRESS": mesh.ServerAddr}
	}
	// issued waits until cert-manager reports cluster's Certificate ready
	// and returns the certificate of the secret it wrote.
	issued := func(t *testing.T, c string) *x509.Certificate {
		t.Helper()
		var cert *x509.Certificate
		testenv.Eventually(t, "cert-manager issues "+secretFor[c]+" on "+c, 90*time.Second, func() error {
			out, _, err := kubectl("", "--context", c, "-n", config.DefaultNamespace, "get", "certificate", certificateFor[c],
				"-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`)
			if err != nil || out != "True" {
				return fmt.Errorf("Certificate %s Ready=%q (%v)", certificateFor[c], out, err)
			}
			role := pki.RoleClient
			if c == "mgmt" {
				role = pki.RoleServer
			}
			cert, err = secretCertificate(ctx, env, c, secretFor[c], role, ca.Cert)
			return err
		})
		return cert
	}

	var serverArgs []string
	t.Run("cert-manager issues relay-server-tls-secret on the management cluster and the webhook admits it", func(t *testing.T) {
		must(mesh.Install(ctx, "mgmt", "cert-manager/management", nil, webhooks["mgmt"]))
		_, err := mesh.StartWebhook(ctx, "mgmt", "", webhooks["mgmt"])
		must(err)
		issued(t, "mgmt")
		cert := rewrittenThroughWebhook(t, ctx, env, mesh, "mgmt", config.DefaultServerTLSSecret, func() *x509.Certificate { return issued(t, "mgmt") })
		if err := pki.CoversAuthority(cert, config.DefaultAuthority); err != nil {
			t.Error(err)
		}
		assertManagedByCertManager(t, ctx, env, "mgmt", config.DefaultServerTLSSecret)
		// relay-server runs as a process with the arguments the overlay
		// gives its Deployment: the CA, its certificates and the token off.
		out, _, err := kubectl("", "--context", "mgmt", "-n", config.DefaultNamespace, "get", "deployment", "gloo-mesh-mgmt-server",
			"-o", "jsonpath={.spec.template.spec.containers[0].args}")
		must(err)
		must(json.Unmarshal([]byte(out), &serverArgs))
		for _, want := range []string{"--disable-ca", "--disable-ca-cert-generation", "--disable-token-generation"} {
			if !slices.Contains(serverArgs, want) {
				t.Fatalf("the overlay's relay-server args %v lack %s", serverArgs, want)
			}
		}
		_, err = mesh.StartServer(ctx, "mgmt", serverArgs...)
		must(err)
	})
	if t.Failed() {
		return
	}

	metrics := "http://" + mesh.ServerMetrics + "/metrics"
	agentMetrics := map[string]string{}
	check := func() (string, int) {
		args := []string{"check", "--mgmt-context", "mgmt", "--server-metrics", metrics}
		for _, c := range workloads {
			args = append(args, "--remote-context", c)
		}
		stdout, stderr, code := mesh.Relayctl(ctx, args...)
		return stdout + stderr, code
	}

	t.Run("each workload cluster gets a client certificate for its name, and its agent only watches it and connects", func(t *testing.T) {
		for _, c := range workloads {
			must(mesh.Install(ctx, c, "cert-manager/workload", settings(c), webhooks[c]))
			_, err := mesh.StartWebhook(ctx, c, c, webhooks[c])
			must(err)
			// Registration: the KubernetesCluster, through the webhook.
			_, _, err = kubectl(fmt.Sprintf("apiVersion: meshrelay.dev/v1alpha1\nkind: KubernetesCluster\nmetadata:\n  name: %s\n  namespace: %s\n", c, config.DefaultNamespace),
				"--context", "mgmt", "apply", "-f", "-")
			must(err)
		}
		for _, c := range workloads {
			issued(t, c)
			cert := rewrittenThroughWebhook(t, ctx, env, mesh, c, config.DefaultClientTLSSecret, func() *x509.Certificate { return issued(t, c) })
			if !slices.Equal(cert.DNSNames, []string{c}) {
				t.Errorf("%s: client certificate DNS names %v, want [%s]", c, cert.DNSNames, c)
			}
			assertManagedByCertManager(t, ctx, env, c, config.DefaultClientTLSSecret)
			_, agentMetrics[c], err = mesh.StartAgent(c, c)
			must(err)
		}
		for _, c := range workloads {
			testenv.Eventually(t, c+" relay metrics read 1", 90*time.Second, func() error {
				for _, g := range []string{"relay_push_clients_connected", "relay_pull_clients_connected"} {
					if v := testenv.MetricValue(testenv.ScrapeMetric(metrics, g+`{cluster="`+c+`"}`)); v != 1 {
						return fmt.Errorf("%s = %v", g, v)
					}
				}
				return nil
			})
			am := "http://" + agentMetrics[c] + "/metrics"
			if line := testenv.ScrapeMetric(am, "relay_agent_certificate_rotations_total"); line != "" {
				t.Errorf("%s: the agent's rotator acted on a secret cert-manager manages: %s", c, line)
			}
		}
		testenv.Eventually(t, "relayctl check passes", 30*time.Second, func() error {
			if out, code := check(); code != 0 {
				return fmt.Errorf("exit %d:\n%s", code, out)
			}
			return nil
		})
	})
	if t.Failed() {
		return
	}

	t.Run("the webhook refuses a Certificate with an underscore name or another cluster's name at apply", func(t *testing.T) {
		for _, c := range []struct {
			cluster, overlay, name string
			dnsNames               []string
			want                   []string
		}{
			{"mgmt", "cert-manager/management", "relay-server-tls", []string{"gloo-mesh-mgmt-server.gloo-mesh", "gloo_mesh_mgmt_server"},
				[]string{`spec.dnsNames[1]`, `"gloo_mesh_mgmt_server" contains an underscore`, `use "gloo-mesh-mgmt-server"`}},
			{"cluster-1", "cert-manager/workload", "relay-client-tls", []string{"cluster_1"},
				[]string{`spec.dnsNames[0]`, `"cluster_1" contains an underscore`, `use "cluster-1"`}},
			{"cluster-1", "cert-manager/workload", "relay-client-tls", []string{"cluster-2"},
				[]string{`spec.dnsNames: [cluster-2] does not hold this cluster's name "cluster-1"`}},
		} {
			manifest := certificateWithNames(t, ctx, env, root, c.overlay, c.name, c.dnsNames)
			names := func() string {
				out, _, err := kubectl("", "--context", c.cluster, "-n", config.DefaultNamespace, "get", "certificate", c.name, "-o", "jsonpath={.spec.dnsNames}")
				must(err)
				return out
			}
			was := names()
			_, stderr, err := kubectl(manifest, "--context", c.cluster, "apply", "-f", "-")
			if err == nil {
				t.Errorf("%s: Certificate %s with DNS names %v was admitted", c.cluster, c.name, c.dnsNames)
				continue
			}
			for _, w := range c.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("%s: refusal of DNS names %v lacks %q:\n%s", c.cluster, c.dnsNames, w, stderr)
				}
			}
			if now := names(); now != was {
				t.Errorf("%s: Certificate %s DNS names went from %s to %s: the refused apply changed it", c.cluster, c.name, was, now)
			}
		}
	})

	t.Run("the vault overlays apply over the running install with server-side dry-run", func(t *testing.T) {
		// They differ from the cert-manager overlays only in relay-issuer
		// (TestEveryOverlayBuildsAndApplies); here they meet this
		// cert-manager release's CRDs and the running webhooks.
		for c, overlay := range map[string]string{"mgmt": "vault/management", "cluster-1": "vault/workload"} {
			out, _, err := kubectl("", "kustomize", filepath.Join(root, "manifests", "overlays", overlay))
			must(err)
			if _, stderr, err := kubectl(out, "--context", c, "apply", "--dry-run=server", "-f", "-"); err != nil {
				t.Errorf("%s on %s: %v\n%s", overlay, c, err, stderr)
			}
		}
	})

	t.Run("cert-manager renews with a short lifetime; server and agents load each renewal without dropping a stream; check passes throughout", func(t *testing.T) {
		// An agent moves its streams to a connection made with each
		// renewed certificate before it closes the old one: the server
		// counts one more opening per stream for each such handover, and
		// the agent no reconnect.
		agentCounter := func(c, name string) float64 {
			return testenv.MetricValue(testenv.ScrapeMetric("http://"+agentMetrics[c]+"/metrics", name))
		}
		opened, handovers, reconnects := map[string]float64{}, map[string]float64{}, map[string]float64{}
		for _, c := range workloads {
			handovers[c], reconnects[c] = agentCounter(c, "relay_agent_stream_handovers_total"), agentCounter(c, "relay_agent_stream_reconnects_total")
			for _, s := range []string{"push", "pull"} {
				v := testenv.MetricValue(testenv.ScrapeMetric(metrics, `relay_streams_opened_total{cluster="`+c+`",stream="`+s+`"}`))
				if v < 1 {
					t.Fatalf("%s: relay_streams_opened_total for %s streams is %v before the renewals, want at least 1", c, s, v)
				}
				opened[c+"/"+s] = v
			}
		}
		obs := newRenewalWatch(ctx, env, mesh, workloads, agentMetrics, roots)
		defer obs.stop()
		checks := runChecks(check)
		defer checks.stop()

		patches := []localmesh.Patch{
			{Kind: "Certificate", Name: "relay-server-tls", Patch: lifetimePatch},
			{Kind: "Certificate", Name: "relay-client-tls", Patch: lifetimePatch},
		}
		before := map[string]float64{}
		for _, c := range clusters {
			before[c] = webhookRequests(mesh, c, "/validate-certificates")
		}
		patchedAt := time.Now()
		must(mesh.InstallPatched(ctx, "mgmt", "cert-manager/management", nil, patches, webhooks["mgmt"]))
		for _, c := range workloads {
			must(mesh.InstallPatched(ctx, c, "cert-manager/workload", settings(c), patches, webhooks[c]))
		}
		for _, c := range clusters {
			if after := webhookRequests(mesh, c, "/validate-certificates"); after <= before[c] {
				t.Errorf("%s: relay-webhook saw %v Certificate requests before the apply and %v after: the shortened Certificate did not pass through it", c, before[c], after)
			}
		}

		testenv.Eventually(t, fmt.Sprintf("every certificate renewed %d times after the reissue, each loaded by its consumers", renewalsToWatch),
			shortDuration+time.Duration(renewalsToWatch+1)*(shortDuration-shortRenewBefore)+time.Minute, func() error {
				return obs.done(patchedAt, renewalsToWatch+1)
			})
		checks.stop()
		obs.stop()

		obs.report(t, patchedAt)
		for _, p := range obs.problems() {
			t.Error(p)
		}
		for _, c := range workloads {
			if now := agentCounter(c, "relay_agent_stream_reconnects_total"); now != reconnects[c] {
				t.Errorf("%s: the agent reconnected %v times across the renewals: its streams dropped", c, now-reconnects[c])
			}
		}
		for k, v := range opened {
			c, s, _ := strings.Cut(k, "/")
			moved := agentCounter(c, "relay_agent_stream_handovers_total") - handovers[c]
			if now := testenv.MetricValue(testenv.ScrapeMetric(metrics, `relay_streams_opened_total{cluster="`+c+`",stream="`+s+`"}`)); now-v != moved {
				t.Errorf("%s: %s streams opened went from %v to %v across the renewals, while the agent moved its streams %v times: a stream was dropped and reopened", c, s, v, now, moved)
			}
		}
		if out, code := check(); code != 0 {
			t.Errorf("relayctl check after the renewals: exit %d:\n%s", code, out)
		}
		runs, failed := checks.result()
		t.Logf("relayctl check ran %d times during the renewals", runs)
		if runs < 10 {
			t.Errorf("relayctl check ran only %d times during the renewals", runs)
		}
		for _, f := range failed {
			t.Errorf("relayctl check failed during the renewals: %s", f)
		}
	})
}

// lifetimePatch is the test's change to the overlays' Certificates.
var lifetimePatch = fmt.Sprintf("- op: replace\n  path: /spec/duration\n  value: %s\n- op: replace\n  path: /spec/renewBefore\n  value: %s\n",
	shortDuration, shortRenewBefore)

// issuerSecret is secret relay-issuer-ca that the overlays' CA Issuer
// signs with: the intermediate's key, and its certificate above the root.
func issuerSecret(inter *pki.Certified) (string, error) {
	key, err := inter.KeyPEM()
	if err != nil {
		return "", err
	}
	doc, err := yaml.Marshal(&corev1.Secret{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{Namespace: config.DefaultNamespace, Name: "relay-issuer-ca"},
		Type:       corev1.SecretTypeTLS,
		Data: map[string][]byte{
			relaysecret.KeyTLSCert: pki.EncodeCertificates(inter.Cert, inter.Root()),
			relaysecret.KeyTLSKey:  key,
		},
	})
	return string(doc), err
}

// certificateSecret is a secret whose ca.crt holds cert and nothing else.
func certificateSecret(name string, cert *x509.Certificate) (string, error) {
	doc, err := yaml.Marshal(&corev1.Secret{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{Namespace: config.DefaultNamespace, Name: name},
		Data:       map[string][]byte{relaysecret.KeyCACert: pki.EncodeCertificates(cert)},
	})
	return string(doc), err
}

// secretCertificate reads a relay secret on cluster and returns its
// certificate once its ca.crt is root and its chain verifies to it for role.
func secretCertificate(ctx context.Context, env *testenv.Env, cluster, name string, role pki.Role, root *x509.Certificate) (*x509.Certificate, error) {
	var s corev1.Secret
	if err := env.Cluster(cluster).Client.Get(ctx, types.NamespacedName{Namespace: config.DefaultNamespace, Name: name}, &s); err != nil {
		return nil, err
	}
	kind := relaysecret.Client
	if role == pki.RoleServer {
		kind = relaysecret.Server
	}
	v, errs := relaysecret.Decode(kind, s.Data, "")
	if len(errs) > 0 {
		return nil, fmt.Errorf("secret %s: %s", name, relaysecret.Message(errs))
	}
	if len(v.Roots) != 1 || !v.Roots[0].Equal(root) {
		return nil, fmt.Errorf("secret %s: ca.crt is not the test's root", name)
	}
	if _, err := pki.VerifyChain(v.Cert, v.Chain, v.Roots, role, time.Now()); err != nil {
		return nil, fmt.Errorf("secret %s: %w", name, err)
	}
	return v.Cert, nil
}

// assertManagedByCertManager checks that cert-manager wrote the secret
// (its annotations), which is what makes relay-agent only watch it.
func assertManagedByCertManager(t *testing.T, ctx context.Context, env *testenv.Env, cluster, name string) {
	t.Helper()
	var s corev1.Secret
	if err := env.Cluster(cluster).Client.Get(ctx, types.NamespacedName{Namespace: config.DefaultNamespace, Name: name}, &s); err != nil {
		t.Fatal(err)
	}
	if s.Annotations["cert-manager.io/certificate-name"] == "" {
		t.Errorf("%s: secret %s lacks cert-manager's annotations: %v", cluster, name, s.Annotations)
	}
}

// webhookRequests is how many admission requests relay-webhook on cluster
// has answered on path.
func webhookRequests(mesh *localmesh.Mesh, cluster, path string) float64 {
	v := testenv.MetricValue(testenv.ScrapeMetric("http://"+mesh.WebhookMetrics[cluster]+"/metrics",
		`controller_runtime_webhook_requests_total{code="200",webhook="`+path+`"}`))
	return max(v, 0)
}

// rewrittenThroughWebhook deletes cluster's relay secret name, which
// cert-manager wrote, waits until reissue gives it back, and checks that
// relay-webhook admitted that write. One kubectl apply creates the
// Certificate and the webhook configuration together, and cert-manager may
// write the secret before the API server enforces the configuration (the
// install-order race of a one-apply install, which this test does not
// judge); the write asked for here comes once relay-webhook serves.
func rewrittenThroughWebhook(t *testing.T, ctx context.Context, env *testenv.Env, mesh *localmesh.Mesh, cluster, name string, reissue func() *x509.Certificate) *x509.Certificate {
	t.Helper()
	const path = "/validate-relay-secrets"
	before := webhookRequests(mesh, cluster, path)
	if _, stderr, err := env.Kubectl(ctx, "", "--context", cluster, "-n", config.DefaultNamespace, "delete", "secret", name); err != nil {
		t.Fatalf("%s: delete secret %s: %v: %s", cluster, name, err, stderr)
	}
	cert := reissue()
	if n := webhookRequests(mesh, cluster, path); n <= before {
		t.Errorf("%s: relay-webhook answered no request on %s while cert-manager wrote secret %s again (%v before, %v after)", cluster, path, name, before, n)
	}
	return cert
}

// certificateWithNames is overlay's Certificate name as users apply it,
// with other DNS names.
func certificateWithNames(t *testing.T, ctx context.Context, env *testenv.Env, root, overlay, name string, dnsNames []string) string {
	t.Helper()
	out, _, err := env.Kubectl(ctx, "", "kustomize", filepath.Join(root, "manifests", "overlays", overlay))
	if err != nil {
		t.Fatal(err)
	}
	objs, err := localmesh.Objects(out)
	if err != nil {
		t.Fatal(err)
	}
	crt := find(t, objs, "Certificate", name)
	if err := unstructured.SetNestedStringSlice(crt.Object, dnsNames, "spec", "dnsNames"); err != nil {
		t.Fatal(err)
	}
	data, err := yaml.Marshal(crt.Object)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}
