package e2e

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/meshrelay/meshrelay/internal/testenv"
	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/pkg/pki"
)

// TestAlertsFireOnAScrapedMesh checks components/monitoring's alerts
// against the metrics of a running mesh: two relay-server replicas (agents
// dial the first; the second sees the clusters registered and no stream of
// theirs, as a replica of a Deployment does), and an agent in each of two
// workload clusters. It puts the mesh in one state after another for real,
// scrapes every process twice in each, and turns the scrapes into promtool
// rule unit tests, one test group per Prometheus (the management cluster's,
// each workload cluster's): gauges hold their last value, counters go on at
// the rate seen between the two scrapes, and the group starts at the time
// of the last scrape, so that timestamp gauges mean what they say. In each
// state exactly the alerts that state makes true fire, after their for:
// and not before, and every other alert is silent:
//
//   - healthy: nothing, up to 90 minutes on;
//   - cluster-2's agent stopped: RelayClusterDisconnected for cluster-2;
//   - cluster-2 revoked, its certificate tried 20 times at the handshake
//     and 20 Bootstraps with a token that is not valid: RelayRefusalSpike
//     for reason revoked and for reason token;
//   - relay-server restarted with two-minute client certificates and a
//     server certificate two thirds through a 30-day life, cluster-2
//     registered again: RelayCertificateExpiring for the server certificate
//     (warning) and for cluster-2's client certificate, from relay-server
//     and from the agent (critical);
//   - relay-server stopped while cluster-2's renewal time passes:
//     RelayRotationOverdue for its failing rotations, then for the renewal
//     an hour overdue; cluster-1's agent, not due, stays silent;
//   - cluster-1's agent holding a certificate 45 days into a 60-day life
//     (under a third left, over 7 days): silent at ratio 0.1, before its
//     renewal time; at the default ratio, past it, RelayCertificateExpiring
//     (warning) and RelayRotationOverdue for both reasons; with 5 days left,
//     RelayCertificateExpiring critical instead of warning.
func TestAlertsFireOnAScrapedMesh(t *testing.T) {
	if testing.Short() {
		t.Skip("needs local clusters, kubectl and promtool, which make test-unit does not start or build: run make test")
	}
	bin := promtool(t)
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	ctx, cancel := context.WithTimeout(t.Context(), 8*time.Minute)
	defer cancel()
	rulesDir := t.TempDir()
	writeRules(t, buildWithMonitoring(ctx, t, kubectlBinary(t), root, "management"), rulesDir)

	workloads := []string{"cluster-1", "cluster-2"}
	mesh, env := startMesh(ctx, t, testenv.Options{Names: append([]string{"mgmt"}, workloads...)})
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
	relayctl := func(args ...string) {
		t.Helper()
		if _, stderr, code := mesh.Relayctl(ctx, args...); code != 0 {
			t.Fatalf("relayctl %s: exit %d: %s", strings.Join(args, " "), code, stderr)
		}
	}
	for _, c := range env.Clusters {
		kubectl("", "--context", c.Name, "create", "namespace", config.DefaultNamespace)
	}
	figures := []string{fmt.Sprintf("mesh up (binaries built, three local clusters): %s", time.Since(began).Round(time.Second))}
	defer func() { t.Logf("figures:\n  %s", strings.Join(figures, "\n  ")) }()

	// The relay CA, made as if relay-server had made it 90 days ago, so
	// that certificates well into their lives can be issued under it
	// later; the server certificate itself is new.
	rootCA, signingCA := applyBackdatedCA(t, kubectl, 90*24*time.Hour)
	serverMetrics1, err := testenv.FreeAddr()
	must(err)
	serverAddr1, err := testenv.FreeAddr()
	must(err)
	server0, err := mesh.StartServer(ctx, "mgmt", "--replica-name", "relay-server-0")
	must(err)
	server1, err := mesh.Start("relay-server", "relay-server-1", "--kubeconfig", env.Kubeconfig, "--context", "mgmt",
		"--listen-address", serverAddr1, "--metrics-address", serverMetrics1, "--replica-name", "relay-server-1")
	must(err)
	must(testenv.WaitReady(ctx, server1, "http://"+serverMetrics1+"/readyz", time.Minute))
	servers := []scrapeTarget{
		{job: "relay-server", service: "gloo-mesh-mgmt-server", pod: "relay-server-0", addr: mesh.ServerMetrics},
		{job: "relay-server", service: "gloo-mesh-mgmt-server", pod: "relay-server-1", addr: serverMetrics1},
	}
	agentTarget := func(cluster, addr string) scrapeTarget {
		return scrapeTarget{job: "relay-agent", service: "relay-agent-metrics", pod: "relay-agent-" + cluster, addr: addr}
	}
	agents := map[string]*testenv.Process{}
	agentTargets := map[string]scrapeTarget{}
	for _, c := range workloads {
		relayctl("register", c, "--mgmt-context", "mgmt", "--remote-context", c)
		p, addr, err := mesh.StartAgent(c, c)
		must(err)
		agents[c], agentTargets[c] = p, agentTarget(c, addr)
	}
	streams := func(cluster string) (push, pull float64) {
		s, err := scrapeAll(servers[0])
		if err != nil {
			return -1, -1
		}
		push, _ = s.value("relay_push_clients_connected", map[string]string{"cluster": cluster})
		pull, _ = s.value("relay_pull_clients_connected", map[string]string{"cluster": cluster})
		return push, pull
	}
	connected := func(clusters ...string) {
		t.Helper()
		for _, c := range clusters {
			testenv.Eventually(t, c+" holds a push and a pull stream on relay-server-0", 90*time.Second, func() error {
				if push, pull := streams(c); push != 1 || pull != 1 {
					return fmt.Errorf("push %v, pull %v", push, pull)
				}
				return nil
			})
		}
	}
	// observe scrapes each set of targets (one Prometheus each), runs
	// between with those scrapes, and scrapes them again.
	observe := func(between func(first []*scrape), sets ...[]scrapeTarget) (first, last []*scrape) {
		t.Helper()
		for _, set := range sets {
			s, err := scrapeAll(set...)
			must(err)
			first = append(first, s)
		}
		between(first)
		for _, set := range sets {
			s, err := scrapeAll(set...)
			must(err)
			last = append(last, s)
		}
		return first, last
	}
	pause := func([]*scrape) { time.Sleep(3 * time.Second) }
	agentGroup := func(state, cluster string, first, last *scrape) *promGroup {
		return newGroup(state+": "+cluster+"'s Prometheus", map[string]string{"cluster": cluster}, first, last)
	}
	var groups []*promGroup

	connected(workloads...)
	{
		state := "healthy"
		first, last := observe(pause, servers, []scrapeTarget{agentTargets["cluster-1"]}, []scrapeTarget{agentTargets["cluster-2"]})
		mgmt := newGroup(state+": the management cluster's Prometheus", nil, first[0], last[0])
		one := agentGroup(state, "cluster-1", first[1], last[1])
		two := agentGroup(state, "cluster-2", first[2], last[2])
		for _, g := range []*promGroup{mgmt, one, two} {
			g.expect(20 * time.Minute)
			g.expect(90 * time.Minute)
		}
		groups = append(groups, mgmt, one, two)
		figures = append(figures, fmt.Sprintf("healthy state scraped: %s", time.Since(began).Round(time.Second)))
	}

	{
		state := "cluster-2's agent stopped"
		must(agents["cluster-2"].Stop())
		testenv.Eventually(t, "relay-server-0 holds no stream of cluster-2", 30*time.Second, func() error {
			if push, pull := streams("cluster-2"); push != 0 || pull != 0 {
				return fmt.Errorf("push %v, pull %v", push, pull)
			}
			return nil
		})
		first, last := observe(pause, servers)
		mgmt := newGroup(state+": the management cluster's Prometheus", nil, first[0], last[0])
		mgmt.expect(4 * time.Minute)
		mgmt.expect(6*time.Minute, disconnected("cluster-2"))
		groups = append(groups, mgmt)
	}

	{
		state := "cluster-2 revoked, its certificate and bad tokens tried"
		cert := loadClientCert(ctx, t, env, "cluster-2")
		relayctl("revoke", "cluster-2", "--mgmt-context", "mgmt")
		roots := x509.NewCertPool()
		roots.AddCert(rootCA.Cert)
		testenv.Eventually(t, "relay-server-0 refuses cluster-2's revoked certificate at the handshake", 30*time.Second, func() error {
			return handshakeRefused(mesh.ServerAddr, roots, cert)
		})
		const tries = 20
		first, last := observe(func([]*scrape) {
			// Two refusals a second for ten seconds: a handshake with the
			// revoked certificate and a Bootstrap with a token that is
			// not valid, from one address (within --peer-signing-rate).
			for range tries {
				must(handshakeRefused(mesh.ServerAddr, roots, cert))
				must(bootstrapRefused(ctx, mesh.ServerAddr, roots))
				time.Sleep(500 * time.Millisecond)
			}
		}, servers)
		for _, c := range []struct {
			name   string
			labels map[string]string
		}{
			{"relay_client_certificates_refused_total", map[string]string{"at": "handshake", "reason": "revoked", "pod": "relay-server-0"}},
			{"relay_certificates_refused_total", map[string]string{"call": "bootstrap", "reason": "token", "pod": "relay-server-0"}},
		} {
			before, _ := first[0].value(c.name, c.labels)
			after, _ := last[0].value(c.name, c.labels)
			if after-before != tries {
				t.Fatalf("%s%v went from %v to %v, want %d more: the refusals were not counted as the alert reads them", c.name, c.labels, before, after, tries)
			}
		}
		figures = append(figures, fmt.Sprintf("refusals: %d + %d in %s", tries, tries, last[0].at.Sub(first[0].at).Round(100*time.Millisecond)))
		mgmt := newGroup(state+": the management cluster's Prometheus", nil, first[0], last[0])
		mgmt.expect(3 * time.Minute)
		mgmt.expect(8*time.Minute, disconnected("cluster-2"), refusalSpike("revoked"), refusalSpike("token"))
		groups = append(groups, mgmt)
	}

	// cluster-2's agent renews at half of its certificate's life: with
	// two-minute certificates, within a minute of each issue, and not
	// while the next state is scraped.
	const ratio = 0.5
	var serverCert *pki.Certified
	{
		state := "two-minute client certificates, a server certificate two thirds through its life"
		serverCert, err = rootCA.IssueServer(pki.Options{CommonName: config.DefaultAuthority, DNSNames: []string{"*." + config.DefaultNamespace, config.DefaultAuthority},
			TTL: 30 * 24 * time.Hour, Now: time.Now().Add(-21 * 24 * time.Hour)})
		must(err)
		keyPEM, err := serverCert.KeyPEM()
		must(err)
		kubectl("", "--context", "mgmt", "-n", config.DefaultNamespace, "patch", "secret", "relay-server-tls-secret", "--type", "merge", "-p",
			fmt.Sprintf(`{"data":{"tls.crt":%q,"tls.key":%q}}`, base64.StdEncoding.EncodeToString(serverCert.CertPEM()), base64.StdEncoding.EncodeToString(keyPEM)))
		must(server0.Stop())
		server0, err = mesh.StartServer(ctx, "mgmt", "--replica-name", "relay-server-0", "--client-certificate-ttl", "2m")
		must(err)
		relayctl("register", "cluster-2", "--mgmt-context", "mgmt", "--remote-context", "cluster-2")
		p, addr, err := mesh.StartAgent("cluster-2", "cluster-2", "--client-tls-secret-rotation-grace-period-ratio", fmt.Sprint(ratio))
		must(err)
		agents["cluster-2"], agentTargets["cluster-2"] = p, agentTarget("cluster-2", addr)
		var client *x509.Certificate
		testenv.Eventually(t, "cluster-2 stores a two-minute certificate", 60*time.Second, func() error {
			c, err := loadClientCertE(ctx, env, "cluster-2")
			if err != nil {
				return err
			}
			if life := c.Leaf.NotAfter.Sub(c.Leaf.NotBefore); life > 5*time.Minute {
				return fmt.Errorf("lifetime %s", life)
			}
			client = c.Leaf
			return nil
		})
		connected(workloads...)
		first, last := observe(pause, servers, []scrapeTarget{agentTargets["cluster-1"]}, []scrapeTarget{agentTargets["cluster-2"]})
		notAfter := float64(client.NotAfter.Unix())
		for _, s := range []struct {
			scrape *scrape
			name   string
			labels map[string]string
			want   float64
		}{
			{last[0], "relay_client_certificate_expiry_timestamp_seconds", map[string]string{"cluster": "cluster-2", "pod": "relay-server-0"}, notAfter},
			{last[2], "relay_agent_client_certificate_expiry_timestamp_seconds", nil, notAfter},
			{last[0], "relay_certificate_expiry_timestamp_seconds", map[string]string{"certificate": "server", "pod": "relay-server-0"}, float64(serverCert.Cert.NotAfter.Unix())},
		} {
			if got, ok := s.scrape.value(s.name, s.labels); !ok || got != s.want {
				t.Fatalf("%s%v = %v (present %v), want %v: the state to test is not the one scraped", s.name, s.labels, got, ok, s.want)
			}
		}
		mgmt := newGroup(state+": the management cluster's Prometheus", nil, first[0], last[0])
		mgmt.expect(10 * time.Minute)
		mgmt.expect(20*time.Minute, serverCertExpiring("server", serverCert.Cert.NotAfter), clusterCertExpiring("cluster-2", client.NotAfter))
		one := agentGroup(state, "cluster-1", first[1], last[1])
		one.expect(20 * time.Minute)
		two := agentGroup(state, "cluster-2", first[2], last[2])
		two.expect(10 * time.Minute)
		two.expect(20*time.Minute, agentCertExpiring(agentTargets["cluster-2"], "cluster-2", client.NotAfter))
		groups = append(groups, mgmt, one, two)
		figures = append(figures, fmt.Sprintf("expiring state scraped: %s", time.Since(began).Round(time.Second)))
	}

	{
		state := "relay-server stopped while cluster-2's renewal time passes"
		client := loadClientCert(ctx, t, env, "cluster-2").Leaf
		renewal, err := pki.RenewalTime(client, ratio, 0)
		must(err)
		a1, a2 := agentTargets["cluster-1"], agentTargets["cluster-2"]
		stopped := time.Now()
		first, last := observe(func(first []*scrape) {
			failedBefore, _ := first[1].value("relay_agent_certificate_rotations_total", map[string]string{"result": "failed"})
			must(server0.Stop())
			must(server1.Stop())
			testenv.Eventually(t, "cluster-2's rotator fails past its renewal time", 2*time.Minute, func() error {
				s, err := scrapeAll(a2)
				if err != nil {
					return err
				}
				failed, _ := s.value("relay_agent_certificate_rotations_total", map[string]string{"result": "failed"})
				if time.Now().Before(renewal.Add(time.Second)) || failed == failedBefore {
					return fmt.Errorf("renewal at %s, %v failed rotations since relay-server stopped", renewal.Format(time.TimeOnly), failed-failedBefore)
				}
				return nil
			})
		}, []scrapeTarget{a1}, []scrapeTarget{a2})
		figures = append(figures, fmt.Sprintf("rotation failing %s after relay-server stopped", time.Since(stopped).Round(time.Second)))
		if got, _ := last[1].value("relay_agent_client_certificate_renewal_timestamp_seconds", nil); got != float64(renewal.Unix()) {
			t.Fatalf("cluster-2's agent reports renewal at %v, want %v, its certificate's (NotAfter less %v of its life)", got, renewal.Unix(), ratio)
		}
		one := agentGroup(state, "cluster-1", first[0], last[0])
		one.expect(20 * time.Minute)
		one.expect(80 * time.Minute)
		two := agentGroup(state, "cluster-2", first[1], last[1])
		two.expect(10 * time.Minute)
		two.expect(20*time.Minute, agentCertExpiring(a2, "cluster-2", client.NotAfter), rotationsFailing(a2, "cluster-2"))
		two.expect(80*time.Minute, agentCertExpiring(a2, "cluster-2", client.NotAfter), rotationsFailing(a2, "cluster-2"), renewalOverdue(a2, "cluster-2", renewal))
		groups = append(groups, one, two)
	}

	// cluster-1's agent with a certificate 45 days into a 60-day life (a
	// third is 20 days, 15 are left), then 55 (5 left), as if it had been
	// issued so; relay-server stays stopped, so a renewal fails.
	// loaded waits until cluster-1's agent reports cert.
	loaded := func(cert *x509.Certificate) {
		t.Helper()
		testenv.Eventually(t, "cluster-1's agent loads the certificate", 30*time.Second, func() error {
			s, err := scrapeAll(agentTargets["cluster-1"])
			if err != nil {
				return err
			}
			if got, _ := s.value("relay_agent_client_certificate_expiry_timestamp_seconds", nil); got != float64(cert.NotAfter.Unix()) {
				return fmt.Errorf("expiry %v, want %v", got, cert.NotAfter.Unix())
			}
			return nil
		})
	}
	agedCert := func(elapsed time.Duration) *x509.Certificate {
		t.Helper()
		// Signed as relay-server signs, bound to cluster-1's
		// KubernetesCluster: the agent renews only such a certificate.
		at := time.Now().Add(-elapsed)
		iss, err := pki.NewIssuer(signingCA, pki.Policy{Role: pki.RoleClient, TTL: 60 * 24 * time.Hour}, at)
		must(err)
		key, err := pki.GenerateKey(pki.ECDSAP256)
		must(err)
		csrPEM, err := pki.NewCSR(key, "cluster-1")
		must(err)
		csr, err := pki.DecodeCSR(csrPEM)
		must(err)
		uid := strings.TrimSpace(kubectl("", "--context", "mgmt", "-n", config.DefaultNamespace, "get", "kubernetescluster", "cluster-1", "-o", "jsonpath={.metadata.uid}"))
		c, err := iss.Sign(csr, pki.Identity{DNSNames: []string{"cluster-1"}, ClusterUID: uid}, at)
		must(err)
		keyPEM, err := pki.EncodePrivateKey(key)
		must(err)
		kubectl("", "--context", "cluster-1", "-n", config.DefaultNamespace, "patch", "secret", "relay-client-tls-secret", "--type", "merge", "-p",
			fmt.Sprintf(`{"data":{"tls.crt":%q,"tls.key":%q}}`, base64.StdEncoding.EncodeToString(c.CertPEM), base64.StdEncoding.EncodeToString(keyPEM)))
		loaded(c.Cert)
		return c.Cert
	}
	// failing waits until cluster-1's rotator has failed once more than
	// it had at the first scrape.
	failing := func(first []*scrape) {
		failed := func(s *scrape) float64 {
			v, _ := s.value("relay_agent_certificate_rotations_total", map[string]string{"result": "failed"})
			return v
		}
		before := failed(first[0])
		testenv.Eventually(t, "cluster-1's rotator fails again", time.Minute, func() error {
			s, err := scrapeAll(agentTargets["cluster-1"])
			if err != nil {
				return err
			}
			if failed(s) == before {
				return fmt.Errorf("%v failed rotations", before)
			}
			return nil
		})
	}
	// restartAgent1 runs cluster-1's agent again with args.
	restartAgent1 := func(args ...string) scrapeTarget {
		t.Helper()
		must(agents["cluster-1"].Stop())
		p, addr, err := mesh.StartAgent("cluster-1", "cluster-1", args...)
		must(err)
		agents["cluster-1"], agentTargets["cluster-1"] = p, agentTarget("cluster-1", addr)
		return agentTargets["cluster-1"]
	}
	var aged *x509.Certificate
	{
		state := "a quarter of cluster-1's certificate left, before its agent's renewal time (ratio 0.1)"
		a1 := restartAgent1("--client-tls-secret-rotation-grace-period-ratio", "0.1")
		aged = agedCert(45 * 24 * time.Hour)
		first, last := observe(pause, []scrapeTarget{a1})
		failed := map[string]string{"result": "failed"}
		before, _ := first[0].value("relay_agent_certificate_rotations_total", failed)
		if after, _ := last[0].value("relay_agent_certificate_rotations_total", failed); after != before {
			t.Fatalf("cluster-1's rotator tried to renew a certificate with %s left at ratio 0.1: failed rotations went from %v to %v", time.Until(aged.NotAfter).Round(time.Hour), before, after)
		}
		one := agentGroup(state, "cluster-1", first[0], last[0])
		one.expect(20 * time.Minute)
		one.expect(80 * time.Minute)
		groups = append(groups, one)
	}
	{
		state := "a quarter of cluster-1's certificate left, past its agent's renewal time (the default ratio)"
		a1 := restartAgent1()
		loaded(aged)
		renewal, err := pki.RenewalTime(aged, config.DefaultRotationGracePeriodRatio, 0)
		must(err)
		first, last := observe(failing, []scrapeTarget{a1})
		one := agentGroup(state, "cluster-1", first[0], last[0])
		one.expect(10 * time.Minute)
		one.expect(20*time.Minute, agentCertThirdLeft(a1, "cluster-1", aged.NotAfter), rotationsFailing(a1, "cluster-1"), renewalOverdue(a1, "cluster-1", renewal))
		groups = append(groups, one)
	}
	{
		state := "5 days of cluster-1's certificate left, past its agent's renewal time (the default ratio)"
		a1 := agentTargets["cluster-1"]
		cert := agedCert(55 * 24 * time.Hour)
		renewal, err := pki.RenewalTime(cert, config.DefaultRotationGracePeriodRatio, 0)
		must(err)
		first, last := observe(failing, []scrapeTarget{a1})
		one := agentGroup(state, "cluster-1", first[0], last[0])
		one.expect(20*time.Minute, agentCertExpiring(a1, "cluster-1", cert.NotAfter), rotationsFailing(a1, "cluster-1"), renewalOverdue(a1, "cluster-1", renewal))
		groups = append(groups, one)
	}

	runStarted := time.Now()
	testRules(ctx, t, bin, rulesDir, groups)
	figures = append(figures, fmt.Sprintf("promtool test rules, %d groups: %s; whole test: %s", len(groups), time.Since(runStarted).Round(time.Millisecond), time.Since(began).Round(time.Second)))
}
