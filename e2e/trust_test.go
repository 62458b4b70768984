package e2e

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/meshrelay/meshrelay/internal/testenv"
	"github.com/meshrelay/meshrelay/pkg/pki"
)

// TestFederatedTrustAcrossTwoWorkloadClusters runs federated trust for Istio
// (each cluster's Istio intermediate CA signed under a shared root) with the real
// binaries on a management cluster and two workload clusters: a
// RootTrustPolicy with a generated root gives each cluster an Istio
// intermediate CA whose key is made in that cluster; workloads of one
// cluster verify against the other's root; the intermediates renew before
// expiry and when the root changes; autoRestartPods restarts once per
// change; deleting the policy stops renewal. When the policy's root
// changes, mesh traffic verifies across the change: root-cert.pem in both
// clusters holds the new and the old root until both clusters hold an
// intermediate under the new one and workloadCertTTL has passed, then the
// old root leaves both.
func TestFederatedTrustAcrossTwoWorkloadClusters(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	workloads := []string{"cluster-1", "cluster-2"}
	mesh, env := startMesh(ctx, t, testenv.Options{Names: append([]string{"mgmt"}, workloads...)})
	kubectl := func(stdin string, args ...string) string {
		t.Helper()
		return env.MustKubectl(ctx, t, stdin, args...)
	}
	secretData := func(kctx, ns, name string) (map[string][]byte, error) {
		var s corev1.Secret
		err := env.Cluster(kctx).Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, &s)
		return s.Data, err
	}
	kubectl("", "--context", "mgmt", "create", "namespace", "gloo-mesh")
	if _, err := mesh.StartServer(ctx, "mgmt"); err != nil {
		t.Fatal(err)
	}
	webhooks, agentMetrics := map[string]string{}, map[string]string{}
	for _, c := range workloads {
		for _, ns := range []string{"gloo-mesh", "istio-system", "bookinfo", "plain"} {
			kubectl("", "--context", c, "create", "namespace", ns)
		}
		kubectl("", "--context", c, "label", "namespace", "bookinfo", "istio-injection=enabled")
		kubectl(deployment("istiod", "istio-system", "app: istiod"), "--context", c, "apply", "-f", "-")
		kubectl(deployment("reviews", "bookinfo", "app: reviews"), "--context", c, "apply", "-f", "-")
		kubectl(deployment("other", "plain", "app: other"), "--context", c, "apply", "-f", "-")
		var err error
		if webhooks[c], err = testenv.FreeAddr(); err != nil {
			t.Fatal(err)
		}
		// The workload overlay's validating webhook checks every cacerts
		// the agent writes (failurePolicy Fail).
		if err := mesh.InstallComponents(ctx, c, "workload", map[string]string{"MESHRELAY_CLUSTER": c, "MESHRELAY_SERVER_ADDRESS": mesh.ServerAddr}, []string{"istio-federated-trust"}, nil, webhooks[c]); err != nil {
			t.Fatal(err)
		}
		if _, err := mesh.StartWebhook(ctx, c, c, webhooks[c]); err != nil {
			t.Fatal(err)
		}
		if _, stderr, code := mesh.Relayctl(ctx, "register", c, "--mgmt-context", "mgmt", "--remote-context", c); code != 0 {
			t.Fatalf("relayctl register %s: %s", c, stderr)
		}
		// The opt-in that lets the agent restart bookinfo's workloads
		// (kubectl fails the test if it fails).
		kubectl("", "--context", c, "-n", "bookinfo", "create", "rolebinding", "relay-agent-istio-restart",
			"--clusterrole=relay-agent-istio-restart", "--serviceaccount=gloo-mesh:relay-agent")
		_, addr, err := mesh.StartAgent(c, c)
		if err != nil {
			t.Fatal(err)
		}
		agentMetrics[c] = "http://" + addr + "/metrics"
	}
	metrics := "http://" + mesh.ServerMetrics + "/metrics"
	testenv.Eventually(t, "both agents connected", 90*time.Second, func() error {
		for _, c := range workloads {
			if v := testenv.MetricValue(testenv.ScrapeMetric(metrics, `relay_pull_clients_connected{cluster="`+c+`"}`)); v != 1 {
				return fmt.Errorf("%s: pull streams = %v", c, v)
			}
		}
		return nil
	})

	// The documented RootTrustPolicy with a generated root, with an
	// intermediate TTL short enough to watch a renewal, and a workload
	// certificate lifetime short enough to watch a root change's overlap
	// end.
	policy := `apiVersion: meshrelay.dev/v1alpha1
kind: RootTrustPolicy
metadata:
  name: istio-ingressgateway
  namespace: gloo-mesh
spec:
  config:
    autoRestartPods: true
    mgmtServerCa:
      generated: {}
    intermediateCertOptions:
      ttl: 1m
    workloadCertTTL: 30s
`
	kubectl(policy, "--context", "mgmt", "apply", "-f", "-")

	// cacerts holds an intermediate for the cluster, chaining to the first
	// root of root-cert.pem; roots are all of them.
	type istioCA struct {
		data  map[string][]byte
		ca    *x509.Certificate
		chain []*x509.Certificate
		root  *x509.Certificate
		roots []*x509.Certificate
	}
	readCA := func(c string) (*istioCA, error) {
		d, err := secretData(c, "istio-system", "cacerts")
		if err != nil {
			return nil, err
		}
		out := &istioCA{data: d}
		if out.ca, err = pki.DecodeCertificate(d[pki.IstioCACertKey]); err != nil {
			return nil, err
		}
		if out.chain, err = pki.DecodeCertificates(d[pki.IstioCertChainKey]); err != nil {
			return nil, err
		}
		if out.roots, err = pki.DecodeCertificates(d[pki.IstioRootCertKey]); err != nil {
			return nil, err
		}
		out.root = out.roots[0]
		if _, err := pki.VerifyChain(out.ca, out.chain[1:], []*x509.Certificate{out.root}, pki.RoleSigningCA, time.Now()); err != nil {
			return nil, err
		}
		return out, nil
	}
	waitCA := func(what string, ok func(c string, ca *istioCA) error) map[string]*istioCA {
		t.Helper()
		got := map[string]*istioCA{}
		testenv.Eventually(t, what, 90*time.Second, func() error {
			for _, c := range workloads {
				ca, err := readCA(c)
				if err != nil {
					return fmt.Errorf("%s: cacerts: %v", c, err)
				}
				if err := ok(c, ca); err != nil {
					return fmt.Errorf("%s: %v", c, err)
				}
				got[c] = ca
			}
			return nil
		})
		return got
	}
	var generated map[string][]byte
	testenv.Eventually(t, "the generated root secret", 30*time.Second, func() (err error) {
		generated, err = secretData("mgmt", "gloo-mesh", "root-trust.istio-ingressgateway")
		return err
	})
	genRoot, err := pki.DecodeCertificate(generated["root-cert.pem"])
	if err != nil {
		t.Fatalf("root-trust.istio-ingressgateway root-cert.pem: %v", err)
	}
	if _, err := pki.DecodePrivateKey(generated["key.pem"]); err != nil {
		t.Fatalf("root-trust.istio-ingressgateway key.pem: %v", err)
	}
	first := waitCA("both clusters hold an intermediate under the generated root", func(c string, ca *istioCA) error {
		if !ca.root.Equal(genRoot) {
			return fmt.Errorf("root-cert.pem is not the policy's generated root")
		}
		if got := ca.ca.Subject.Locality; len(got) != 1 || got[0] != c {
			return fmt.Errorf("intermediate's locality %v, want the cluster", got)
		}
		return nil
	})
	for _, c := range workloads {
		ca := first[c].ca
		if !ca.IsCA || !ca.MaxPathLenZero || len(ca.DNSNames) != 1 || ca.DNSNames[0] != pki.IstiodDNSName {
			t.Errorf("%s: intermediate IsCA=%v pathlen0=%v SANs=%v", c, ca.IsCA, ca.MaxPathLenZero, ca.DNSNames)
		}
	}

	// Federated trust: a workload certificate issued by cluster-1's
	// intermediate verifies against cluster-2's root-cert.pem.
	key1, err := pki.DecodePrivateKey(first["cluster-1"].data[pki.IstioCAKeyKey])
	if err != nil {
		t.Fatal(err)
	}
	mesh1 := &pki.Certified{Cert: first["cluster-1"].ca, Key: key1, Issuers: first["cluster-1"].chain[1:]}
	leaf, err := mesh1.IssueClient(pki.Options{DNSNames: []string{"reviews.bookinfo.svc"}, TTL: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pki.VerifyChain(leaf.Cert, []*x509.Certificate{mesh1.Cert}, []*x509.Certificate{first["cluster-2"].root}, pki.RoleClient, time.Now()); err != nil {
		t.Errorf("cluster-1's workload does not verify against cluster-2's root-cert.pem: %v", err)
	}

	// The intermediate keys never reach the management cluster.
	allSecrets := kubectl("", "--context", "mgmt", "get", "secrets", "-A", "-o", "json")
	for _, c := range workloads {
		for _, form := range [][]byte{first[c].data[pki.IstioCAKeyKey], []byte(base64.StdEncoding.EncodeToString(first[c].data[pki.IstioCAKeyKey]))} {
			if bytes.Contains([]byte(allSecrets), bytes.TrimSpace(form)) {
				t.Errorf("%s's intermediate key is stored on the management cluster", c)
			}
		}
	}
	if logs, err := os.ReadFile(filepath.Join(mesh.Dir, "relay-server.log")); err != nil || bytes.Contains(logs, []byte("PRIVATE KEY")) {
		t.Errorf("relay-server's log holds a private key (or cannot be read: %v)", err)
	}

	// The policy's status, and the server's metrics, per cluster.
	testenv.Eventually(t, "the policy's status reports both clusters", 30*time.Second, func() error {
		out := kubectl("", "--context", "mgmt", "-n", "gloo-mesh", "get", "roottrustpolicy", "istio-ingressgateway", "-o", "json")
		var p struct {
			Status struct {
				Root     struct{ SHA256 string }
				Clusters []struct {
					Name      string
					Issued    bool
					NotAfter  time.Time
					LastError string
				}
			}
		}
		if err := json.Unmarshal([]byte(out), &p); err != nil {
			return err
		}
		if p.Status.Root.SHA256 != pki.Fingerprint(genRoot) {
			return fmt.Errorf("status.root.sha256 %q", p.Status.Root.SHA256)
		}
		if len(p.Status.Clusters) != 2 {
			return fmt.Errorf("status.clusters = %+v", p.Status.Clusters)
		}
		for _, s := range p.Status.Clusters {
			if !s.Issued || s.LastError != "" || s.NotAfter.IsZero() {
				return fmt.Errorf("status of %s: %+v", s.Name, s)
			}
		}
		return nil
	})
	for _, c := range workloads {
		testenv.Eventually(t, c+" intermediate expiry metric", 30*time.Second, func() error {
			got := testenv.MetricValue(testenv.ScrapeMetric(metrics, `relay_istio_intermediate_expiry_timestamp_seconds{cluster="`+c+`",policy="istio-ingressgateway"}`))
			cur, err := readCA(c)
			if err != nil {
				return err
			}
			if got != float64(cur.ca.NotAfter.Unix()) {
				return fmt.Errorf("metric %v, cacerts expires %d", got, cur.ca.NotAfter.Unix())
			}
			return nil
		})
	}

	// The webhook is on the path of cacerts: a broken one is refused.
	broken := "apiVersion: v1\nkind: Secret\nmetadata:\n  name: cacerts\n  namespace: istio-system\nstringData:\n  ca-cert.pem: junk\n"
	if _, stderr, err := env.Kubectl(ctx, broken, "--context", "cluster-1", "apply", "--dry-run=server", "-f", "-"); err == nil || !strings.Contains(stderr, "ca-cert.pem") {
		t.Errorf("a broken cacerts was not refused by the webhook: %v %s", err, stderr)
	}

	// autoRestartPods: istiod and the injected namespace's workloads are
	// restarted once for this cacerts; the plain namespace is not.
	restarts := func(c string) map[string]string {
		out := map[string]string{}
		for _, d := range []struct{ ns, name string }{{"istio-system", "istiod"}, {"bookinfo", "reviews"}, {"plain", "other"}} {
			out[d.name] = kubectl("", "--context", c, "-n", d.ns, "get", "deployment", d.name, "-o",
				`jsonpath={.spec.template.metadata.annotations.kubectl\.kubernetes\.io/restartedAt}/{.spec.template.metadata.annotations.meshrelay\.dev/cacerts-revision}`)
		}
		return out
	}
	restartedFor := func(c string, ca *x509.Certificate) func() error {
		return func() error {
			r := restarts(c)
			rev := pki.Fingerprint(ca)[:16]
			for _, name := range []string{"istiod", "reviews"} {
				if !strings.HasSuffix(r[name], "/"+rev) {
					return fmt.Errorf("%s %s: restart annotations %q, want revision %s", c, name, r[name], rev)
				}
			}
			if r["other"] != "/" {
				return fmt.Errorf("%s: a Deployment outside injected namespaces was restarted: %q", c, r["other"])
			}
			return nil
		}
	}
	for _, c := range workloads {
		testenv.Eventually(t, c+"'s istiod and reviews restarted for the first cacerts", 30*time.Second, restartedFor(c, first[c].ca))
	}
	before := restarts("cluster-1")
	// Status reports and ticks go on; nothing restarts again while cacerts
	// stays the same.
	time.Sleep(8 * time.Second)
	if cur, err := readCA("cluster-1"); err == nil && cur.ca.Equal(first["cluster-1"].ca) {
		if after := restarts("cluster-1"); after["istiod"] != before["istiod"] || after["reviews"] != before["reviews"] {
			t.Errorf("restarted again without a cacerts change: %v then %v", before, after)
		}
	}

	// Renewal before expiry: a new intermediate, under the same root, and
	// one more restart for it.
	renewed := waitCA("both intermediates renewed before expiry", func(c string, ca *istioCA) error {
		if ca.ca.Equal(first[c].ca) {
			return fmt.Errorf("still the first intermediate (expires %s)", first[c].ca.NotAfter.Format(time.TimeOnly))
		}
		if !ca.root.Equal(genRoot) {
			return fmt.Errorf("root changed")
		}
		return nil
	})
	for _, c := range workloads {
		if !renewed[c].ca.NotBefore.Before(first[c].ca.NotAfter) {
			t.Errorf("%s: renewed at %s, after the first expired at %s", c, renewed[c].ca.NotBefore, first[c].ca.NotAfter)
		}
	}
	testenv.Eventually(t, "cluster-1 restarted once more for the renewed cacerts", 30*time.Second, func() error {
		cur, err := readCA("cluster-1")
		if err != nil {
			return err
		}
		return restartedFor("cluster-1", cur.ca)()
	})

	// Renewal on root change: the policy now names a root the user made.
	userRoot, err := pki.NewRootCA(pki.Options{CommonName: "user mesh root", TTL: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	userKey, err := userRoot.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for name, b := range map[string][]byte{"root-cert.pem": userRoot.CAPEM(), "key.pem": userKey} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	kubectl("", "--context", "mgmt", "-n", "gloo-mesh", "create", "secret", "generic", "user-mesh-root",
		"--from-file", filepath.Join(dir, "root-cert.pem"), "--from-file", filepath.Join(dir, "key.pem"))
	// The intermediates under the generated root, with their keys: their
	// workload certificates must keep verifying across the change.
	old := waitCA("both clusters under the generated root before the change", func(_ string, ca *istioCA) error {
		if !ca.root.Equal(genRoot) || len(ca.roots) != 1 {
			return fmt.Errorf("root-cert.pem holds %d roots, the first %q", len(ca.roots), ca.root.Subject.CommonName)
		}
		return nil
	})
	kubectl(strings.Replace(policy, "generated: {}", "secretRef:\n        name: user-mesh-root", 1), "--context", "mgmt", "apply", "-f", "-")
	overlap := waitCA("both clusters moved to the user's root, root-cert.pem keeping the generated root after it", func(c string, ca *istioCA) error {
		if !ca.root.Equal(userRoot.Cert) {
			return fmt.Errorf("root-cert.pem starts with %q", ca.root.Subject.CommonName)
		}
		if len(ca.roots) != 2 || !ca.roots[1].Equal(genRoot) {
			return fmt.Errorf("root-cert.pem holds %d roots, want the user's then the generated one", len(ca.roots))
		}
		return nil
	})
	// Mesh traffic verifies across the change, both ways: a workload
	// certificate of cluster-1's old intermediate against cluster-2's
	// root-cert.pem, one of cluster-2's new intermediate against
	// cluster-1's.
	workloadCert := func(ca *istioCA) *x509.Certificate {
		t.Helper()
		key, err := pki.DecodePrivateKey(ca.data[pki.IstioCAKeyKey])
		if err != nil {
			t.Fatal(err)
		}
		issuer := &pki.Certified{Cert: ca.ca, Key: key, Issuers: ca.chain[1:]}
		leaf, err := issuer.IssueClient(pki.Options{DNSNames: []string{"reviews.bookinfo.svc"}, TTL: 30 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		return leaf.Cert
	}
	for _, v := range []struct {
		what   string
		issuer *istioCA
		peer   string
	}{
		{"cluster-1's old intermediate", old["cluster-1"], "cluster-2"},
		{"cluster-2's new intermediate", overlap["cluster-2"], "cluster-1"},
	} {
		if _, err := pki.VerifyChain(workloadCert(v.issuer), []*x509.Certificate{v.issuer.ca}, overlap[v.peer].roots, pki.RoleClient, time.Now()); err != nil {
			t.Errorf("a workload certificate of %s does not verify against %s's root-cert.pem: %v", v.what, v.peer, err)
		}
	}
	// The overlap is visible: the policy's status, the server's root
	// expiry metric, the agents' and autoRestartPods' revisions.
	type overlapStatus struct {
		Status struct {
			TrustedRoots []struct{ SHA256 string }
			RootChange   *struct {
				Pending     []string
				RetireAfter *time.Time
			}
		}
	}
	policyStatus := func() (overlapStatus, error) {
		var p overlapStatus
		err := json.Unmarshal([]byte(kubectl("", "--context", "mgmt", "-n", "gloo-mesh", "get", "roottrustpolicy", "istio-ingressgateway", "-o", "json")), &p)
		return p, err
	}
	userSHA, genSHA := pki.Fingerprint(userRoot.Cert), pki.Fingerprint(genRoot)
	testenv.Eventually(t, "the policy's status shows the overlap", 20*time.Second, func() error {
		p, err := policyStatus()
		if err != nil {
			return err
		}
		if rc := p.Status.RootChange; len(p.Status.TrustedRoots) != 2 || p.Status.TrustedRoots[0].SHA256 != userSHA || p.Status.TrustedRoots[1].SHA256 != genSHA ||
			rc == nil || len(rc.Pending) != 0 || rc.RetireAfter == nil {
			return fmt.Errorf("status %+v: want the user's then the generated root trusted, no cluster pending, a retireAfter", p.Status)
		}
		return nil
	})
	rootExpiry := func(sha string) float64 {
		return testenv.MetricValue(testenv.ScrapeMetric(metrics, `relay_trust_policy_root_expiry_timestamp_seconds{policy="istio-ingressgateway",sha256="`+sha+`"}`))
	}
	if got := rootExpiry(genSHA); got != float64(genRoot.NotAfter.Unix()) {
		t.Errorf("relay_trust_policy_root_expiry_timestamp_seconds of the generated root during the overlap: %v, want %d", got, genRoot.NotAfter.Unix())
	}
	for _, c := range workloads {
		if got := testenv.MetricValue(testenv.ScrapeMetric(agentMetrics[c], `relay_agent_istio_root_expiry_timestamp_seconds{sha256="`+genSHA+`"}`)); got != float64(genRoot.NotAfter.Unix()) {
			t.Errorf("%s: relay_agent_istio_root_expiry_timestamp_seconds of the generated root during the overlap: %v, want %d", c, got, genRoot.NotAfter.Unix())
		}
	}
	testenv.Eventually(t, "cluster-1 restarted for the cacerts with both roots", 20*time.Second, func() error {
		cur, err := readCA("cluster-1")
		if err != nil {
			return err
		}
		rev := restarts("cluster-1")["istiod"]
		if want := "/" + pki.Fingerprint(cur.ca)[:16] + "-"; len(cur.roots) != 2 || !strings.Contains(rev, want) || len(rev) != strings.Index(rev, want)+len(want)+8 {
			return fmt.Errorf("istiod's restart annotations %q, want a revision of the intermediate and the 8 hex digits of the roots beside its own (%d roots)", rev, len(cur.roots))
		}
		return nil
	})
	// After workloadCertTTL the generated root leaves both clusters.
	after := waitCA("the generated root left root-cert.pem in both clusters", func(_ string, ca *istioCA) error {
		if len(ca.roots) != 1 || !ca.root.Equal(userRoot.Cert) {
			return fmt.Errorf("root-cert.pem holds %d roots, the first %q", len(ca.roots), ca.root.Subject.CommonName)
		}
		return nil
	})
	if _, err := pki.VerifyChain(workloadCert(old["cluster-1"]), []*x509.Certificate{old["cluster-1"].ca}, after["cluster-2"].roots, pki.RoleClient, time.Now()); err == nil {
		t.Error("after the overlap, a workload certificate of cluster-1's old intermediate still verifies against cluster-2's root-cert.pem")
	}
	testenv.Eventually(t, "the policy's status and metrics show the user's root alone", 20*time.Second, func() error {
		p, err := policyStatus()
		if err != nil {
			return err
		}
		if len(p.Status.TrustedRoots) != 1 || p.Status.TrustedRoots[0].SHA256 != userSHA || p.Status.RootChange != nil {
			return fmt.Errorf("status %+v: want the user's root alone and no root change", p.Status)
		}
		if got := rootExpiry(genSHA); got != -1 {
			return fmt.Errorf("the generated root's expiry series is still served: %v", got)
		}
		if got := rootExpiry(userSHA); got != float64(userRoot.Cert.NotAfter.Unix()) {
			return fmt.Errorf("the user's root expiry series %v, want %d", got, userRoot.Cert.NotAfter.Unix())
		}
		return nil
	})
	testenv.Eventually(t, "cluster-1 restarted for the cacerts without the generated root", 30*time.Second, func() error {
		cur, err := readCA("cluster-1")
		if err != nil {
			return err
		}
		if len(cur.roots) != 1 {
			return fmt.Errorf("root-cert.pem holds %d roots", len(cur.roots))
		}
		return restartedFor("cluster-1", cur.ca)()
	})

	// Deleting the policy stops renewal: past the next renewal time the
	// intermediates are the same and the server signed nothing more.
	kubectl("", "--context", "mgmt", "-n", "gloo-mesh", "delete", "roottrustpolicy", "istio-ingressgateway")
	time.Sleep(2 * time.Second)
	issued := testenv.MetricValue(testenv.ScrapeMetric(metrics, `relay_istio_intermediates_issued_total{policy="istio-ingressgateway"}`))
	last := map[string]*x509.Certificate{}
	var latest time.Time
	for _, c := range workloads {
		cur, err := readCA(c)
		if err != nil {
			t.Fatal(err)
		}
		last[c] = cur.ca
		if cur.ca.NotAfter.After(latest) {
			latest = cur.ca.NotAfter
		}
	}
	time.Sleep(time.Until(latest) + 5*time.Second)
	for _, c := range workloads {
		cur, err := secretData(c, "istio-system", "cacerts")
		if err != nil {
			t.Fatal(err)
		}
		ca, err := pki.DecodeCertificate(cur[pki.IstioCACertKey])
		if err != nil || !ca.Equal(last[c]) {
			t.Errorf("%s: cacerts changed after the policy was deleted (%v)", c, err)
		}
	}
	if got := testenv.MetricValue(testenv.ScrapeMetric(metrics, `relay_istio_intermediates_issued_total{policy="istio-ingressgateway"}`)); got != issued {
		t.Errorf("the server signed %v intermediates after the policy was deleted", got-issued)
	}
}

// deployment is a one-replica Deployment named name in ns, selecting labels
// (one "key: value" line).
func deployment(name, ns, labels string) string {
	return fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata:
  name: %[1]s
  namespace: %[2]s
  labels:
    %[3]s
spec:
  replicas: 1
  selector:
    matchLabels:
      %[3]s
  template:
    metadata:
      labels:
        %[3]s
    spec:
      containers:
        - name: app
          image: registry.k8s.io/pause:3.10
`, name, ns, labels)
}
