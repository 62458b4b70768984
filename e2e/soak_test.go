package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshrelay/meshrelay/internal/localmesh"
	"github.com/meshrelay/meshrelay/internal/testenv"
	meshv1alpha1 "github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
	"github.com/meshrelay/meshrelay/pkg/config"
)

// soakServerFlags shorten the lifetimes of the certificates relay-server
// generates to minutes (2m is the shortest it accepts), so that a soak of
// a few minutes sees every kind of rotation: the server certificate is
// renewed when 65% of its lifetime is left (every 42s), the intermediate
// at the default 35% (every 78s), and a root rotation begins when 35% of
// the root's 5 minutes is left. Client certificates live a minute and
// the agents renew them when 35% is left (every 39s).
var soakServerFlags = []string{
	"--root-certificate-ttl=5m",
	"--signing-certificate-ttl=2m",
	"--server-certificate-ttl=2m",
	"--server-renewal-ratio=0.65",
	"--root-rotation-overlap=10s",
	"--client-certificate-ttl=1m",
	"--renewal-budget=5",
}

// soakClientTTL is the client certificate lifetime of soakServerFlags.
const soakClientTTL = time.Minute

// soakTargets are the rotations a soak must see, each counted in the
// RelayTrust's status.rotations and, for roots and server certificates,
// among the certificates the probers met.
type soakTargets struct {
	root, intermediate, server int64
}

// TestRotationSoakShort is the short form of the rotation soak that make
// test runs: a management cluster and two workload clusters, the real
// binaries from the rendered management and workload overlays, relay-server
// with lifetimes of minutes, for about three and a half minutes. See
// runSoak.
func TestRotationSoakShort(t *testing.T) {
	runSoak(t, 210*time.Second, 2*time.Minute, soakTargets{root: 1, intermediate: 2, server: 4})
}

// TestRotationSoakLong is the soak of make soak: runSoak for SOAK_DURATION
// (30m unless set), with the targets: at least 3 root, 10
// intermediate and 20 server certificate rotations.
func TestRotationSoakLong(t *testing.T) {
	if os.Getenv("SOAK") == "" {
		t.Skip("the long rotation soak runs for SOAK_DURATION (30m by default): run make soak")
	}
	d := 30 * time.Minute
	if s := os.Getenv("SOAK_DURATION"); s != "" {
		var err error
		if d, err = time.ParseDuration(s); err != nil || d <= 0 {
			t.Fatalf("SOAK_DURATION=%q is not a positive duration such as 30m: %v", s, err)
		}
	}
	runSoak(t, d, 5*time.Minute, soakTargets{root: 3, intermediate: 10, server: 20})
}

// runSoak starts a mesh whose relay-server rotates every certificate it
// generated within minutes and, for soak (then, while want is not yet
// met, up to grace more), watches: a prober per workload cluster making a
// fresh mutual TLS handshake every 100 ms as the cluster's agent does,
// the agents' streams (relay_streams_opened_total and the connected
// gauges, the agents' reconnects and handovers), relayctl check every
// two seconds and the RelayTrust's phases.
// It logs the counts, then asserts: at least want's root, intermediate and
// server rotations, client certificates renewed on both clusters, no
// failed handshake, no stream dropped (no agent reconnect, and every
// opening of a stream on relay-server a handover of its agent's streams
// to a renewed certificate's connection), relayctl check passing
// throughout.
func runSoak(t *testing.T, soak, grace time.Duration, want soakTargets) {
	ctx, cancel := context.WithTimeout(t.Context(), soak+grace+10*time.Minute)
	defer cancel()
	m := startRotationMesh(ctx, t, soakServerFlags...)
	mgmt := m.env.Cluster("mgmt")

	var before *meshv1alpha1.RelayTrust
	testenv.Eventually(t, "relay-server keeps a RelayTrust", time.Minute, func() (err error) {
		before, err = readTrust(ctx, mgmt)
		return err
	})
	streamsBefore, err := readStreamCounts(m.mesh.ServerMetrics, m.agentMetrics, m.workloads)
	if err != nil {
		t.Fatal(err)
	}
	clientRenewals := m.agentRenewals()
	ps, err := startProbers(ctx, m.env, m.mesh.ServerAddr, m.workloads)
	if err != nil {
		t.Fatal(err)
	}
	defer ps.stop()
	checks := runChecks(m.check)
	defer checks.stop()
	streams := watchStreams(m.mesh.ServerMetrics, m.agentMetrics, m.workloads)
	defer streams.stop()
	trust := watchTrust(ctx, mgmt)
	defer trust.stop()
	begun := time.Now()
	t.Logf("soak: %s from %s, then up to %s more until it has seen %d root, %d intermediate and %d server rotations",
		soak, begun.Format(time.TimeOnly), grace, want.root, want.intermediate, want.server)

	// rotated returns the rotations seen so far, from the RelayTrust and
	// from the probers, and what is still short of want.
	rotated := func() (status, probed soakTargets, short []string) {
		if rt := trust.latest(); rt != nil {
			r := rt.Status.Rotations
			status = soakTargets{r.Root - before.Status.Rotations.Root, r.Intermediate - before.Status.Rotations.Intermediate, r.Server - before.Status.Rotations.Server}
		}
		// The first certificate met is the one in place when the soak
		// began; each other one is a rotation.
		probed.root = int64(ps.distinct(func(p *prober) map[string]seenCert { return p.roots }) - 1)
		probed.intermediate = int64(ps.distinct(func(p *prober) map[string]seenCert { return p.issuers }) - 1)
		probed.server = int64(ps.distinct(func(p *prober) map[string]seenCert { return p.served }) - 1)
		for _, c := range []struct {
			what      string
			got, want int64
		}{
			{"root rotations in RelayTrust status.rotations.root", status.root, want.root},
			{"intermediate rotations in status.rotations.intermediate", status.intermediate, want.intermediate},
			{"server certificate rotations in status.rotations.server", status.server, want.server},
			{"roots the probers' handshakes verified to, less the first", probed.root, want.root},
			{"server certificates served to the probers, less the first", probed.server, want.server},
		} {
			if c.got < c.want {
				short = append(short, fmt.Sprintf("%d %s, want at least %d", c.got, c.what, c.want))
			}
		}
		return status, probed, short
	}
	select {
	case <-ctx.Done():
		t.Fatal(ctx.Err())
	case <-time.After(soak):
	}
	for end := time.Now().Add(grace); ; {
		if _, _, short := rotated(); len(short) == 0 || time.Now().After(end) {
			break
		}
		time.Sleep(5 * time.Second)
	}
	ps.stop()
	checks.stop()
	streams.stop()
	trust.stop()
	took := time.Since(begun).Round(time.Second)

	status, probed, short := rotated()
	ok, failed, _, failures := ps.counts()
	streamsAfter, err := readStreamCounts(m.mesh.ServerMetrics, m.agentMetrics, m.workloads)
	if err != nil {
		t.Error(err)
	}
	handovers, drops := streamsBefore.drops(streamsAfter)
	samples, gaps := streams.result()
	runs, checkFailures := checks.result()
	renewed := m.agentRenewals()
	var clients []string
	for _, p := range ps {
		_, _, n, _ := p.seen()
		clients = append(clients, fmt.Sprintf("%s %d (the agent's rotator: %v)", p.cluster, n-1, renewed[p.cluster]-clientRenewals[p.cluster]))
	}

	var b strings.Builder
	fmt.Fprintf(&b, "soak counts over %s:\n", took)
	fmt.Fprintf(&b, "  root rotations:          %d (RelayTrust status), %d roots met by the probers after the first\n", status.root, probed.root)
	fmt.Fprintf(&b, "  intermediate rotations:  %d (RelayTrust status), %d client issuers met by the probers after the first\n", status.intermediate, probed.intermediate)
	fmt.Fprintf(&b, "  server rotations:        %d (RelayTrust status), %d server certificates served to the probers after the first\n", status.server, probed.server)
	fmt.Fprintf(&b, "  client renewals:         %s\n", strings.Join(clients, ", "))
	fmt.Fprintf(&b, "  handshakes:              %d ok, %d failed\n", ok, failed)
	fmt.Fprintf(&b, "  stream drops:            %d (agent reconnects, openings no handover explains), %d samples of %d without both streams; %v handovers to a renewed certificate's connection\n", len(drops), len(gaps), samples, handovers)
	fmt.Fprintf(&b, "  relayctl check:          %d runs, %d failed\n", runs, len(checkFailures))
	fmt.Fprintf(&b, "  phases:\n    %s", strings.Join(trust.history(), "\n    "))
	t.Log(b.String())
	if stdout, stderr, code := m.mesh.Relayctl(ctx, "rotate", "status", "--context", "mgmt"); code != 0 {
		t.Logf("relayctl rotate status: exit %d:\n%s%s", code, stdout, stderr)
	} else {
		t.Logf("relayctl rotate status:\n%s", stdout)
	}

	for _, s := range short {
		t.Errorf("too few rotations in %s: %s: is relay-server rotating its certificates?", took, s)
	}
	wantClient := max(1, int(soak/(2*soakClientTTL)))
	for _, p := range ps {
		if _, _, n, _ := p.seen(); n-1 < wantClient {
			t.Errorf("%s: the agent presented %d renewed client certificates in %s, want at least %d (they live %s)", p.cluster, n-1, took, wantClient, soakClientTTL)
		}
	}
	if failed > 0 {
		t.Errorf("%d of %d handshakes failed; the first:\n%s", failed, ok+failed, strings.Join(failures, "\n"))
	}
	if minimum := int(took/time.Second) * len(ps); ok < minimum {
		t.Errorf("only %d handshakes succeeded in %s from %d clusters, want at least one a second from each: the probers did not probe", ok, took, len(ps))
	}
	if len(drops) > 0 {
		t.Errorf("agents' streams dropped: %s", strings.Join(drops, "; "))
		// The logs' last lines (printed as the mesh stops) rarely reach
		// back to the drop: show why each session ended.
		logs, _ := filepath.Glob(filepath.Join(m.mesh.Dir, "*.log"))
		for _, l := range logs {
			if lines := grepFile(l, "reconnecting", "level=ERROR", "stream refused", "closed a stream", "evict"); lines != "" {
				t.Logf("%s, lines on sessions that ended or streams closed:\n%s", filepath.Base(l), lines)
			}
		}
	}
	if len(gaps) > 0 {
		t.Errorf("%d samples found a stream not connected; the first: %s", len(gaps), strings.Join(gaps[:min(10, len(gaps))], "\n"))
	}
	if runs == 0 {
		t.Error("relayctl check never ran")
	}
	for _, f := range checkFailures[:min(5, len(checkFailures))] {
		t.Errorf("relayctl check failed during the soak at %s", f)
	}
}

// rotationMesh is a management cluster and two workload clusters with
// the management and workload overlays installed, relay-webhook on each,
// relay-server as its rendered Deployment says with extra flags, both
// clusters registered with relayctl and an agent each, connected.
// relay-server is a process the test may kill and start again.
type rotationMesh struct {
	ctx          context.Context
	mesh         *localmesh.Mesh
	env          *testenv.Env
	workloads    []string
	serverFlags  []string
	server       *testenv.Process
	starts       int
	webhookAddrs map[string]string
	webhooks     map[string]*testenv.Process
	agents       map[string]*testenv.Process
	agentMetrics map[string]string
}

func startRotationMesh(ctx context.Context, t *testing.T, serverFlags ...string) *rotationMesh {
	t.Helper()
	workloads := []string{"cluster-1", "cluster-2"}
	mesh, env := startMesh(ctx, t, testenv.Options{Names: append([]string{"mgmt"}, workloads...)})
	m := &rotationMesh{ctx: ctx, mesh: mesh, env: env, workloads: workloads, serverFlags: serverFlags,
		webhookAddrs: map[string]string{}, webhooks: map[string]*testenv.Process{},
		agents: map[string]*testenv.Process{}, agentMetrics: map[string]string{}}
	t.Cleanup(func() {
		if m.server != nil {
			if exited, _ := m.server.Exited(); !exited {
				if err := m.server.Stop(); err != nil {
					t.Error(err)
				}
			}
		}
	})
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range env.Clusters {
		addr, err := testenv.FreeAddr()
		must(err)
		m.webhookAddrs[c.Name] = addr
	}
	must(mesh.Install(ctx, "mgmt", "management", nil, m.webhookAddrs["mgmt"]))
	m.startWebhook(t, "mgmt")
	m.startServer(t)
	for _, c := range workloads {
		must(mesh.Install(ctx, c, "workload", map[string]string{config.EnvCluster: c, config.EnvServerAddress: mesh.ServerAddr}, m.webhookAddrs[c]))
		m.startWebhook(t, c)
	}
	for _, c := range workloads {
		m.register(t, c)
		m.startAgent(t, c)
	}
	m.waitConnected(t, 2*time.Minute)
	testenv.Eventually(t, "relayctl check passes", time.Minute, func() error {
		if out, code := m.check(); code != 0 {
			return fmt.Errorf("exit %d:\n%s", code, out)
		}
		return nil
	})
	return m
}

// startServer runs relay-server as the management overlay's Deployment
// says, with the mesh's flags, and waits until it is ready. Each start
// logs to a file of its own (relay-server-1.log, ...). The process is the
// test's to stop or kill.
func (m *rotationMesh) startServer(t *testing.T) {
	t.Helper()
	var err error
	if m.mesh.ServerAddr == "" {
		if m.mesh.ServerAddr, err = testenv.FreeAddr(); err != nil {
			t.Fatal(err)
		}
		if m.mesh.ServerMetrics, err = testenv.FreeAddr(); err != nil {
			t.Fatal(err)
		}
	}
	dep, err := localmesh.DeploymentOf(m.mesh.Rendered("mgmt"), "relay-server")
	if err != nil {
		t.Fatal(err)
	}
	m.starts++
	p, _, err := m.mesh.StartDeployment(m.ctx, "mgmt", dep, localmesh.Local{
		Pod:       dep + "-local-0",
		LogName:   fmt.Sprintf("relay-server-%d", m.starts),
		Flags:     []string{"--listen-address", m.mesh.ServerAddr, "--metrics-address", m.mesh.ServerMetrics},
		Extra:     m.serverFlags,
		Untracked: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	m.server = p
	if err := testenv.WaitReady(m.ctx, p, "http://"+m.mesh.ServerMetrics+"/readyz", 2*time.Minute); err != nil {
		t.Fatal(err)
	}
}

// startWebhook runs relay-webhook on cluster at its address and waits
// until it is ready.
func (m *rotationMesh) startWebhook(t *testing.T, cluster string) {
	t.Helper()
	name := cluster
	if cluster == "mgmt" {
		name = ""
	}
	p, err := m.mesh.StartWebhook(m.ctx, cluster, name, m.webhookAddrs[cluster])
	if err != nil {
		t.Fatal(err)
	}
	m.webhooks[cluster] = p
}

// register runs relayctl register for cluster, with extra flags.
func (m *rotationMesh) register(t *testing.T, cluster string, extra ...string) {
	t.Helper()
	args := append([]string{"register", cluster, "--context", "mgmt", "--remote-context", cluster}, extra...)
	if _, stderr, code := m.mesh.Relayctl(m.ctx, args...); code != 0 {
		t.Fatalf("relayctl register %s: exit %d: %s", cluster, code, stderr)
	}
}

// startAgent runs cluster's agent as the workload overlay's Deployment
// says.
func (m *rotationMesh) startAgent(t *testing.T, cluster string) {
	t.Helper()
	p, metrics, err := m.mesh.StartAgent(cluster, cluster)
	if err != nil {
		t.Fatal(err)
	}
	m.agents[cluster], m.agentMetrics[cluster] = p, metrics
}

// connected says which workload cluster does not hold one push and one
// pull stream, as relay-server counts them; nil when all do.
func (m *rotationMesh) connected() error {
	metrics := testenv.ScrapeMetrics("http://" + m.mesh.ServerMetrics + "/metrics")
	for _, c := range m.workloads {
		for _, s := range []string{"push", "pull"} {
			if v := metrics[`relay_`+s+`_clients_connected{cluster="`+c+`"}`]; v != 1 {
				return fmt.Errorf("relay-server counts %v %s streams of %s", v, s, c)
			}
		}
	}
	return nil
}

// waitConnected waits until every agent holds its streams.
func (m *rotationMesh) waitConnected(t *testing.T, within time.Duration) {
	t.Helper()
	testenv.Eventually(t, "every agent holds a push and a pull stream", within, m.connected)
}

// check runs relayctl check over the mesh.
func (m *rotationMesh) check() (string, int) {
	args := []string{"check", "--context", "mgmt", "--server-metrics", "http://" + m.mesh.ServerMetrics + "/metrics"}
	for _, c := range m.workloads {
		args = append(args, "--remote-context", c)
	}
	stdout, stderr, code := m.mesh.Relayctl(m.ctx, args...)
	return stdout + stderr, code
}

// agentRenewals returns, by cluster, the client certificates the agent's
// rotator obtained (relay_agent_certificate_rotations_total{result=
// "succeeded"}).
func (m *rotationMesh) agentRenewals() map[string]float64 {
	out := map[string]float64{}
	for _, c := range m.workloads {
		out[c] = testenv.ScrapeMetrics("http://" + m.agentMetrics[c] + "/metrics")[`relay_agent_certificate_rotations_total{result="succeeded"}`]
	}
	return out
}

// grepFile returns the lines of path that hold any of words, at most the
// last 40.
func grepFile(path string, words ...string) string {
	data, _ := os.ReadFile(path)
	var out []string
	for line := range strings.SplitSeq(string(data), "\n") {
		for _, w := range words {
			if strings.Contains(line, w) {
				out = append(out, line)
				break
			}
		}
	}
	return strings.Join(out[max(0, len(out)-40):], "\n")
}
