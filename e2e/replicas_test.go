package e2e

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshrelay/meshrelay/internal/localmesh"
	"github.com/meshrelay/meshrelay/internal/testenv"
	meshv1alpha1 "github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
	"github.com/meshrelay/meshrelay/pkg/pki"
)

// reconnectWithin is how soon every agent of a stopped relay-server replica
// must hold its streams on another replica.
const reconnectWithin = 10 * time.Second

// serverReplica is one relay-server process, as a pod of its Deployment:
// its own name (POD_NAME), gRPC and metrics addresses.
type serverReplica struct {
	name, addr, metrics string
	proc                *testenv.Process
	gone                bool
}

func (r *serverReplica) metricsURL() string { return "http://" + r.metrics + "/metrics" }

// agentReplica is one relay-agent process of a workload cluster.
type agentReplica struct {
	cluster, name, metrics string
	proc                   *testenv.Process
	gone                   bool
}

// replicaMesh is a management cluster with several relay-server replicas
// behind one balancer (the Service agents dial) and workload clusters with
// several relay-agent replicas each, every one a local process.
type replicaMesh struct {
	t         *testing.T
	ctx       context.Context
	mesh      *localmesh.Mesh
	env       *testenv.Env
	lb        *testenv.Balancer
	workloads []string
	servers   []*serverReplica
	agents    []*agentReplica
	// figures are the durations measured, logged as the test ends.
	figures []string
}

// startServer runs relay-server replica name against the management
// cluster, waits until it is ready and puts it behind the balancer.
func (m *replicaMesh) startServer(name string, extra ...string) *serverReplica {
	m.t.Helper()
	addr, err := testenv.FreeAddr()
	if err != nil {
		m.t.Fatal(err)
	}
	metrics, err := testenv.FreeAddr()
	if err != nil {
		m.t.Fatal(err)
	}
	args := append([]string{"--kubeconfig", m.env.Kubeconfig, "--context", "mgmt", "--listen-address", addr, "--metrics-address", metrics}, extra...)
	p, err := testenv.StartProcessEnv(filepath.Join(m.mesh.Bins, "relay-server"), filepath.Join(m.mesh.Dir, name+".log"), []string{"POD_NAME=" + name}, args...)
	if err != nil {
		m.t.Fatal(err)
	}
	r := &serverReplica{name: name, addr: addr, metrics: metrics, proc: p}
	m.servers = append(m.servers, r)
	if err := testenv.WaitReady(m.ctx, p, "http://"+metrics+"/readyz", time.Minute); err != nil {
		m.t.Fatal(err)
	}
	m.lb.Add(addr)
	return r
}

// startAgent runs relay-agent replica name in cluster, dialing the
// balancer.
func (m *replicaMesh) startAgent(cluster, name string, extra ...string) *agentReplica {
	m.t.Helper()
	metrics, err := testenv.FreeAddr()
	if err != nil {
		m.t.Fatal(err)
	}
	args := append([]string{"--kubeconfig", m.env.Kubeconfig, "--context", cluster, "--cluster", cluster,
		"--server-address", m.lb.Addr(), "--metrics-address", metrics}, extra...)
	p, err := testenv.StartProcessEnv(filepath.Join(m.mesh.Bins, "relay-agent"), filepath.Join(m.mesh.Dir, name+".log"), []string{"POD_NAME=" + name}, args...)
	if err != nil {
		m.t.Fatal(err)
	}
	a := &agentReplica{cluster: cluster, name: name, metrics: metrics, proc: p}
	m.agents = append(m.agents, a)
	return a
}

// stopAll stops the processes the test has not stopped itself.
func (m *replicaMesh) stopAll() {
	for i := len(m.agents) - 1; i >= 0; i-- {
		if a := m.agents[i]; !a.gone {
			if err := a.proc.Stop(); err != nil {
				m.t.Error(err)
			}
		}
	}
	for i := len(m.servers) - 1; i >= 0; i-- {
		if s := m.servers[i]; !s.gone {
			if err := s.proc.Stop(); err != nil {
				m.t.Error(err)
			}
		}
	}
}

func (m *replicaMesh) live() []*serverReplica {
	var out []*serverReplica
	for _, s := range m.servers {
		if !s.gone {
			out = append(out, s)
		}
	}
	return out
}

func (m *replicaMesh) liveAgents(cluster string) []*agentReplica {
	var out []*agentReplica
	for _, a := range m.agents {
		if !a.gone && (cluster == "" || a.cluster == cluster) {
			out = append(out, a)
		}
	}
	return out
}

func (m *replicaMesh) server(name string) *serverReplica {
	for _, s := range m.servers {
		if s.name == name {
			return s
		}
	}
	m.t.Fatalf("no relay-server replica %s", name)
	return nil
}

func (m *replicaMesh) figure(format string, args ...any) {
	f := fmt.Sprintf(format, args...)
	m.figures = append(m.figures, f)
	m.t.Logf("measured: %s", f)
}

// kubectl runs kubectl and fails the test when it fails.
func (m *replicaMesh) kubectl(args ...string) string {
	m.t.Helper()
	return m.env.MustKubectl(m.ctx, m.t, "", args...)
}

// clusters returns the KubernetesClusters on the management cluster by
// name, as kubectl get -o json prints them.
func (m *replicaMesh) clusters() (map[string]*meshv1alpha1.KubernetesCluster, error) {
	out, stderr, err := m.env.Kubectl(m.ctx, "", "--context", "mgmt", "get", "kubernetesclusters", "-n", "gloo-mesh", "-o", "json")
	if err != nil {
		return nil, fmt.Errorf("kubectl get kubernetesclusters: %w: %s", err, stderr)
	}
	var list meshv1alpha1.KubernetesClusterList
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		return nil, fmt.Errorf("kubectl get kubernetesclusters -o json: %w", err)
	}
	byName := map[string]*meshv1alpha1.KubernetesCluster{}
	for i := range list.Items {
		byName[list.Items[i].Name] = &list.Items[i]
	}
	return byName, nil
}

// wide logs kubectl get kubernetesclusters -o wide, the table people read.
func (m *replicaMesh) wide(step string) {
	m.t.Helper()
	out := m.kubectl("--context", "mgmt", "get", "kubernetesclusters", "-n", "gloo-mesh", "-o", "wide")
	// The Replicas column shows one replica; -o json has them all.
	all, err := m.clusters()
	if err != nil {
		m.t.Fatal(err)
	}
	var held strings.Builder
	for _, c := range m.workloads {
		if kc := all[c]; kc != nil {
			fmt.Fprintf(&held, "\n  %s: status.replicas %v, streams (push, pull) %v", c, kcEntries(kc), kcStreams(kc))
		}
	}
	m.t.Logf("kubectl get kubernetesclusters -n gloo-mesh -o wide, %s:\n%s%s", step, out, held.String())
}

// kcCondition returns kc's condition of type typ, or a zero one.
func kcCondition(kc *meshv1alpha1.KubernetesCluster, typ string) metav1.Condition {
	if c := meta.FindStatusCondition(kc.Status.Conditions, typ); c != nil {
		return *c
	}
	return metav1.Condition{Type: typ, Status: "<none>"}
}

// kcStreams returns the push and pull streams each replica's entry of kc
// reports, the replicas with none left out.
func kcStreams(kc *meshv1alpha1.KubernetesCluster) map[string][2]int32 {
	out := map[string][2]int32{}
	for _, r := range kc.Status.Replicas {
		if r.PushStreams > 0 || r.PullStreams > 0 {
			out[r.Replica] = [2]int32{r.PushStreams, r.PullStreams}
		}
	}
	return out
}

// kcEntries returns the replica names of kc's status.replicas.
func kcEntries(kc *meshv1alpha1.KubernetesCluster) []string {
	var out []string
	for _, r := range kc.Status.Replicas {
		out = append(out, r.Replica)
	}
	return out
}

// serverStreams returns, for each live replica, the push and pull streams
// of cluster its metrics report.
func (m *replicaMesh) serverStreams(cluster string) map[string][2]int32 {
	out := map[string][2]int32{}
	for _, s := range m.live() {
		got := testenv.ScrapeMetrics(s.metricsURL())
		push := got[`relay_push_clients_connected{cluster="`+cluster+`"}`]
		pull := got[`relay_pull_clients_connected{cluster="`+cluster+`"}`]
		if push > 0 || pull > 0 {
			out[s.name] = [2]int32{int32(push), int32(pull)}
		}
	}
	return out
}

// connected checks that every live agent of cluster holds its streams
// (each one push and one pull stream, on a live replica, by the server
// metrics and its own) and that status says so: Connected=True, and the
// live replicas' entries report exactly the streams their metrics do.
func (m *replicaMesh) connected(cluster string) error {
	agents := m.liveAgents(cluster)
	for _, a := range agents {
		got := testenv.ScrapeMetrics("http://" + a.metrics + "/metrics")
		for _, s := range []string{"push", "pull"} {
			if v := got[`relay_agent_stream_connected{stream="`+s+`"}`]; v != 1 {
				return fmt.Errorf("agent %s: relay_agent_stream_connected{stream=%q} = %v", a.name, s, v)
			}
		}
	}
	metrics := m.serverStreams(cluster)
	var push, pull int32
	for _, n := range metrics {
		push, pull = push+n[0], pull+n[1]
	}
	if int(push) != len(agents) || int(pull) != len(agents) {
		return fmt.Errorf("%s: the live replicas' metrics count %d push and %d pull streams (%v), want %d each: one per agent", cluster, push, pull, metrics, len(agents))
	}
	all, err := m.clusters()
	if err != nil {
		return err
	}
	kc := all[cluster]
	if kc == nil {
		return fmt.Errorf("no KubernetesCluster %s", cluster)
	}
	if c := kcCondition(kc, meshv1alpha1.ConditionConnected); c.Status != metav1.ConditionTrue {
		return fmt.Errorf("%s: Connected=%s (%s: %s)", cluster, c.Status, c.Reason, c.Message)
	}
	live := map[string]bool{}
	for _, s := range m.live() {
		live[s.name] = true
	}
	inStatus := kcStreams(kc)
	for r := range inStatus {
		if !live[r] {
			delete(inStatus, r) // a stopped replica's entry stays until its Lease expires
		}
	}
	if !sameReplicaStreams(inStatus, metrics) {
		return fmt.Errorf("%s: status.replicas of live replicas report streams %v, their metrics %v", cluster, inStatus, metrics)
	}
	return nil
}

// columnRight checks the Replicas column (status.connectedReplicas, which
// the leader derives, so it lags while no replica leads): it names every
// live replica holding both streams of cluster, and no other live one.
func (m *replicaMesh) columnRight(cluster string) error {
	all, err := m.clusters()
	if err != nil {
		return err
	}
	kc := all[cluster]
	if kc == nil {
		return fmt.Errorf("no KubernetesCluster %s", cluster)
	}
	live := map[string]bool{}
	for _, s := range m.live() {
		live[s.name] = true
	}
	metrics := m.serverStreams(cluster)
	holding, listed := map[string]bool{}, map[string]bool{}
	for r, n := range metrics {
		if n[0] > 0 && n[1] > 0 {
			holding[r] = true
		}
	}
	for _, r := range strings.Split(kc.Status.ConnectedReplicas, ",") {
		if live[r] {
			listed[r] = true
		}
	}
	if !maps.Equal(holding, listed) {
		return fmt.Errorf("%s: status.connectedReplicas %q names the live replicas %v, want those holding both streams %v", cluster, kc.Status.ConnectedReplicas, sortedReplicas(listed), sortedReplicas(holding))
	}
	return nil
}

func sameReplicaStreams(a, b map[string][2]int32) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func sortedReplicas(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// serial returns the serial of relay-client-tls-secret in cluster, as
// status and relayctl revoke write serials.
func (m *replicaMesh) serial(cluster string) (string, error) {
	enc, stderr, err := m.env.Kubectl(m.ctx, "", "--context", cluster, "-n", "gloo-mesh", "get", "secret", "relay-client-tls-secret", "-o", `jsonpath={.data.tls\.crt}`)
	if err != nil {
		return "", fmt.Errorf("%s: %w: %s", cluster, err, stderr)
	}
	raw, err := base64.StdEncoding.DecodeString(enc)
	if err != nil {
		return "", err
	}
	certs, err := pki.DecodeCertificates(raw)
	if err != nil {
		return "", fmt.Errorf("%s: relay-client-tls-secret: %w", cluster, err)
	}
	return certs[0].SerialNumber.Text(16), nil
}

// statusSerialMatches checks that status.clientCertificate of cluster is
// the certificate in its relay-client-tls-secret.
func (m *replicaMesh) statusSerialMatches(cluster string) error {
	want, err := m.serial(cluster)
	if err != nil {
		return err
	}
	all, err := m.clusters()
	if err != nil {
		return err
	}
	kc := all[cluster]
	if kc == nil || kc.Status.ClientCertificate == nil {
		return fmt.Errorf("%s: no status.clientCertificate", cluster)
	}
	if got := kc.Status.ClientCertificate.Serial; got != want {
		return fmt.Errorf("%s: status.clientCertificate.serial %s, relay-client-tls-secret holds %s", cluster, got, want)
	}
	return nil
}

// issued sums relay_certificates_issued_total over the live replicas.
func (m *replicaMesh) issued() float64 {
	var n float64
	for _, s := range m.live() {
		for k, v := range testenv.ScrapeMetrics(s.metricsURL()) {
			if strings.HasPrefix(k, "relay_certificates_issued_total") {
				n += v
			}
		}
	}
	return n
}

// leaders returns the live replicas that say they hold Lease relay-server.
func (m *replicaMesh) leaders() []string {
	var out []string
	for _, s := range m.live() {
		if testenv.ScrapeMetrics(s.metricsURL())[`leader_election_master_status{name="relay-server"}`] == 1 {
			out = append(out, s.name)
		}
	}
	return out
}

// events returns the Events of KubernetesCluster cluster with reason.
func (m *replicaMesh) events(cluster, reason string) ([]corev1.Event, error) {
	out, stderr, err := m.env.Kubectl(m.ctx, "", "--context", "mgmt", "get", "events", "-n", "gloo-mesh",
		"--field-selector", "involvedObject.kind=KubernetesCluster,involvedObject.name="+cluster+",reason="+reason, "-o", "json")
	if err != nil {
		return nil, fmt.Errorf("kubectl get events: %w: %s", err, stderr)
	}
	var list corev1.EventList
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		return nil, err
	}
	return list.Items, nil
}

// eventSeen waits until cluster has an Event with reason whose message
// contains each of want.
func (m *replicaMesh) eventSeen(t *testing.T, cluster, reason string, within time.Duration, want ...string) corev1.Event {
	t.Helper()
	var found corev1.Event
	testenv.Eventually(t, fmt.Sprintf("a %s Event on KubernetesCluster %s", reason, cluster), within, func() error {
		evs, err := m.events(cluster, reason)
		if err != nil {
			return err
		}
	next:
		for _, e := range evs {
			for _, w := range want {
				if !strings.Contains(e.Message, w) {
					continue next
				}
			}
			found = e
			return nil
		}
		var msgs []string
		for _, e := range evs {
			msgs = append(msgs, e.Message)
		}
		return fmt.Errorf("%d %s Event(s), none containing %q: %q", len(evs), reason, want, msgs)
	})
	return found
}

// replicaEventTime is when e happened: its eventTime (events.k8s.io), else its
// last timestamp.
func replicaEventTime(e corev1.Event) time.Time {
	if !e.EventTime.IsZero() {
		return e.EventTime.Time
	}
	return e.LastTimestamp.Time
}

// check runs relayctl check on every cluster. It reads KubernetesCluster
// status for the streams, as it does by default: no --server-metrics.
func (m *replicaMesh) check() (string, int) {
	args := []string{"check", "--mgmt-context", "mgmt"}
	for _, c := range m.workloads {
		args = append(args, "--remote-context", c)
	}
	stdout, stderr, code := m.mesh.Relayctl(m.ctx, args...)
	return stdout + stderr, code
}

// checkCounts runs relayctl check and checks that it passes and that its
// line of each cluster counts the streams of its live agents, as
// KubernetesCluster status reports them.
func (m *replicaMesh) checkCounts(t *testing.T, within time.Duration) string {
	t.Helper()
	var out string
	testenv.Eventually(t, "relayctl check passes and counts every agent's streams", within, func() error {
		var code int
		out, code = m.check()
		if code != 0 {
			return fmt.Errorf("exit %d:\n%s", code, out)
		}
		for _, c := range m.workloads {
			n := len(m.liveAgents(c))
			if !regexp.MustCompile(fmt.Sprintf(`(?m)^%s +true +%d +%d `, c, n, n)).MatchString(out) {
				return fmt.Errorf("no row for %s registered with %d push and %d pull streams:\n%s", c, n, n, out)
			}
		}
		return nil
	})
	return out
}

// stopServer stops replica r with SIGKILL (kill) or SIGTERM, and waits
// until every agent holds its streams on the other live replicas. It
// returns how long that took, and fails the test when it took longer than
// reconnectWithin or a certificate was issued meanwhile.
func (m *replicaMesh) stopServer(t *testing.T, r *serverReplica, kill bool) time.Duration {
	t.Helper()
	issued := m.issued() - issuedBy(r) // over the replicas that stay
	serials := map[string]string{}
	for _, c := range m.workloads {
		if len(m.liveAgents(c)) == 0 {
			continue
		}
		s, err := m.serial(c)
		if err != nil {
			t.Fatal(err)
		}
		serials[c] = s
	}
	start := time.Now()
	how := "SIGTERM"
	if kill {
		how = "SIGKILL"
		if err := r.proc.Kill(); err != nil {
			t.Fatal(err)
		}
	} else if err := r.proc.Stop(); err != nil {
		t.Fatal(err)
	}
	r.gone = true
	var took time.Duration
	testenv.Eventually(t, "every agent holds its streams on the live replicas", 3*reconnectWithin, func() error {
		for c := range serials {
			if err := m.connected(c); err != nil {
				return err
			}
		}
		took = time.Since(start)
		return nil
	})
	m.figure("%s of %s: every agent back on the other replicas, status and metrics agreeing, after %s", how, r.name, took.Round(100*time.Millisecond))
	if took > reconnectWithin {
		t.Errorf("the agents of %s took %s to hold their streams on the other replicas, want under %s", r.name, took, reconnectWithin)
	}
	if now := m.issued(); now != issued {
		t.Errorf("relay_certificates_issued_total over the live replicas went from %v to %v: a reconnection re-issued a certificate", issued, now)
	}
	for c, before := range serials {
		if s, err := m.serial(c); err != nil || s != before {
			t.Errorf("%s: relay-client-tls-secret serial went from %s to %s (%v): a reconnection re-issued a certificate", c, before, s, err)
		}
		if err := m.statusSerialMatches(c); err != nil {
			t.Error(err)
		}
	}
	return took
}

// issuedBy is relay_certificates_issued_total of r alone, read before it
// stops; zero once it has.
func issuedBy(r *serverReplica) float64 {
	var n float64
	for k, v := range testenv.ScrapeMetrics(r.metricsURL()) {
		if strings.HasPrefix(k, "relay_certificates_issued_total") {
			n += v
		}
	}
	return n
}

// entryLeaves waits until the status entries and the Lease of stopped
// replica r are gone, and returns how long that was after since.
func (m *replicaMesh) entryLeaves(t *testing.T, r *serverReplica, since time.Time, within time.Duration) time.Duration {
	t.Helper()
	var took time.Duration
	testenv.Eventually(t, "the entries and the Lease of "+r.name+" are gone", within, func() error {
		all, err := m.clusters()
		if err != nil {
			return err
		}
		for name, kc := range all {
			if slices.Contains(kcEntries(kc), r.name) {
				return fmt.Errorf("KubernetesCluster %s still lists %s in status.replicas %v", name, r.name, kcEntries(kc))
			}
		}
		out, _, err := m.env.Kubectl(m.ctx, "", "--context", "mgmt", "-n", "gloo-mesh", "get", "leases", "-l", "meshrelay.dev/relay-server-replica", "-o", "name")
		if err != nil {
			return err
		}
		if slices.Contains(strings.Fields(out), "lease.coordination.k8s.io/relay-server-replica-"+r.name) {
			return fmt.Errorf("Lease relay-server-replica-%s is still there: %s", r.name, out)
		}
		took = time.Since(since)
		return nil
	})
	return took
}

// busiest returns the live replica holding the most streams by status,
// preferring one that does not lead, and the streams it holds.
func (m *replicaMesh) busiest(t *testing.T) (*serverReplica, int32) {
	t.Helper()
	all, err := m.clusters()
	if err != nil {
		t.Fatal(err)
	}
	held := map[string]int32{}
	for _, kc := range all {
		for r, n := range kcStreams(kc) {
			held[r] += n[0] + n[1]
		}
	}
	leaders := m.leaders()
	var best *serverReplica
	for _, s := range m.live() {
		if best == nil || held[s.name] > held[best.name] || (held[s.name] == held[best.name] && slices.Contains(leaders, best.name)) {
			best = s
		}
	}
	return best, held[best.name]
}

// TestThreeRelayServerReplicasAndTwoAgentsPerCluster runs relay-server as
// three replicas behind one address (a round-robin balancer, as a Service
// spreads connections over pods) and two relay-agent replicas in each of
// two workload clusters, every one a process with its own POD_NAME. At each
// step it reads KubernetesCluster status with kubectl and holds it against
// the replicas' metrics: the agents spread over the replicas; a replica
// killed with SIGKILL, or stopped with SIGTERM, loses its agents to the
// others within ten seconds, with no certificate issued, and leaves status
// when its Lease expires or is released; the leader, killed, is replaced,
// and the conditions stay right; and Events record bootstraps, renewals,
// revocation (eviction and refusal) and a certificate left to expire.
func TestThreeRelayServerReplicasAndTwoAgentsPerCluster(t *testing.T) {
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	workloads := []string{"cluster-1", "cluster-2"}
	mesh, env := startMesh(ctx, t, testenv.Options{
		Names:   append([]string{"mgmt"}, workloads...),
		CRDDirs: []string{filepath.Join(root, "manifests", "crds"), filepath.Join(root, "hack", "crds", "cert-manager")},
	})
	lb, err := testenv.NewBalancer()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lb.Close() })
	m := &replicaMesh{t: t, ctx: ctx, mesh: mesh, env: env, lb: lb, workloads: workloads}
	t.Cleanup(m.stopAll) // before the mesh's cleanup, which shows the logs
	t.Cleanup(func() { t.Logf("figures:\n  %s", strings.Join(m.figures, "\n  ")) })
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	// What agents and relay-webhook are given as the server's address is
	// the balancer's.
	mesh.ServerAddr = lb.Addr()

	webhooks := map[string]string{}
	for _, c := range env.Clusters {
		webhooks[c.Name], err = testenv.FreeAddr()
		must(err)
	}
	must(mesh.Install(ctx, "mgmt", "management", nil, webhooks["mgmt"]))
	_, err = mesh.StartWebhook(ctx, "mgmt", "", webhooks["mgmt"])
	must(err)
	// The first replica makes the CA; the others find it.
	m.startServer("relay-server-0")
	m.startServer("relay-server-1")
	m.startServer("relay-server-2")
	for _, c := range workloads {
		must(mesh.Install(ctx, c, "workload", map[string]string{"MESHRELAY_CLUSTER": c, "MESHRELAY_SERVER_ADDRESS": lb.Addr()}, webhooks[c]))
		_, err := mesh.StartWebhook(ctx, c, c, webhooks[c])
		must(err)
	}
	register := func(c string) {
		t.Helper()
		if _, stderr, code := mesh.Relayctl(ctx, "register", c, "--mgmt-context", "mgmt", "--remote-context", c); code != 0 {
			t.Fatalf("relayctl register %s: exit %d: %s", c, code, stderr)
		}
	}
	// cluster-1's agents renew at half of a certificate's lifetime, so
	// that the two-minute certificates of the last steps renew within the
	// test and before a third of their life is left; cluster-2's keep the
	// default.
	agentFlags := map[string][]string{"cluster-1": {"--client-tls-secret-rotation-grace-period-ratio", "0.5"}}
	for _, c := range workloads {
		register(c)
		m.startAgent(c, "relay-agent-"+c+"-a", agentFlags[c]...)
		m.startAgent(c, "relay-agent-"+c+"-b", agentFlags[c]...)
	}

	t.Run("every agent connects, spread over the replicas, and status says so", func(t *testing.T) {
		start := time.Now()
		for _, c := range workloads {
			testenv.Eventually(t, c+" connected", 90*time.Second, func() error { return errors.Join(m.connected(c), m.columnRight(c)) })
		}
		m.figure("2 clusters x 2 agents bootstrapped and connected %s after the agents started", time.Since(start).Round(100*time.Millisecond))
		m.wide("after bootstrap")
		all, err := m.clusters()
		must(err)
		holding := map[string]bool{}
		for _, c := range workloads {
			kc := all[c]
			for r := range kcStreams(kc) {
				holding[r] = true
			}
			if got := kcCondition(kc, meshv1alpha1.ConditionRegistered); got.Status != metav1.ConditionTrue || got.Reason != "Bootstrapped" {
				t.Errorf("%s: Registered=%s (%s), want True (Bootstrapped)", c, got.Status, got.Reason)
			}
			if got := kcCondition(kc, meshv1alpha1.ConditionCertificateValid); got.Status != metav1.ConditionTrue || got.Reason != "Valid" {
				t.Errorf("%s: CertificateValid=%s (%s: %s), want True (Valid)", c, got.Status, got.Reason, got.Message)
			}
			if kc.Status.AgentVersion == "" || kc.Status.LastSeen == nil {
				t.Errorf("%s: agentVersion %q, lastSeen %v: want both", c, kc.Status.AgentVersion, kc.Status.LastSeen)
			}
			testenv.Eventually(t, c+"'s status names the certificate its secret holds", 10*time.Second, func() error { return m.statusSerialMatches(c) })
		}
		if len(holding) < 2 {
			t.Errorf("the 4 agents hold their streams on %v only, want at least 2 replicas: the balancer spreads them", sortedReplicas(holding))
		}
		for _, c := range workloads {
			m.eventSeen(t, c, "Bootstrapped", 30*time.Second, "signed client certificate", "for a bootstrap")
		}
		if leaders := m.leaders(); len(leaders) != 1 {
			t.Errorf("replicas leading: %v, want exactly one", leaders)
		}
		t.Logf("relayctl check, reading KubernetesCluster status:\n%s", m.checkCounts(t, 30*time.Second))
	})

	t.Run("a replica killed with SIGKILL loses its agents to the others within 10s, with no certificate issued, and leaves status when its Lease expires", func(t *testing.T) {
		victim, held := m.busiest(t)
		t.Logf("killing %s, which holds %d streams", victim.name, held)
		start := time.Now()
		m.stopServer(t, victim, true)
		m.wide("right after " + victim.name + " was killed")
		// Until its Lease expires, the killed replica's entry is taken as
		// live: relayctl check passes, its counts are logged, not judged.
		out, code := m.check()
		t.Logf("relayctl check right after %s was killed: exit %d\n%s", victim.name, code, out)
		if code != 0 {
			t.Errorf("relayctl check right after the agents reconnected: exit %d, want 0", code)
		}
		took := m.entryLeaves(t, victim, start, 60*time.Second)
		m.figure("%s's status entries and Lease gone %s after SIGKILL", victim.name, took.Round(100*time.Millisecond))
		m.wide("once " + victim.name + "'s Lease expired")
		for _, c := range workloads {
			if err := m.connected(c); err != nil {
				t.Error(err)
			}
		}
		m.checkCounts(t, 15*time.Second)
		// Its Deployment makes a pod in its place.
		m.startServer("relay-server-3")
	})

	t.Run("the leader, killed, is replaced once its Lease expires, and the new one keeps conditions right", func(t *testing.T) {
		leaders := m.leaders()
		if len(leaders) != 1 {
			t.Fatalf("replicas leading: %v, want exactly one", leaders)
		}
		holder := m.kubectl("--context", "mgmt", "-n", "gloo-mesh", "get", "lease", "relay-server", "-o", "jsonpath={.spec.holderIdentity}")
		if holder == "" {
			t.Fatal("Lease relay-server has no holder")
		}
		old := m.server(leaders[0])
		start := time.Now()
		m.stopServer(t, old, true)
		var next string
		testenv.Eventually(t, "another replica leads", 40*time.Second, func() error {
			l := m.leaders()
			if len(l) != 1 {
				return fmt.Errorf("replicas leading: %v", l)
			}
			next = l[0]
			return nil
		})
		took := time.Since(start)
		m.figure("leader %s killed with SIGKILL: %s leads %s later", old.name, next, took.Round(100*time.Millisecond))
		// The Lease lasts 15s from the renewal a candidate last saw, and
		// candidates look every 2s with jitter.
		if took > 25*time.Second {
			t.Errorf("a new leader took %s, want about the Lease's 15s", took)
		}
		h := m.kubectl("--context", "mgmt", "-n", "gloo-mesh", "get", "lease", "relay-server", "-o", "jsonpath={.spec.holderIdentity}")
		if h == holder || h == "" {
			t.Errorf("Lease relay-server is held by %q, before %q: want a new holder", h, holder)
		}
		t.Logf("Lease relay-server: holder %q, before %q", h, holder)
		for _, c := range workloads {
			testenv.Eventually(t, c+" connected after the leader change", 30*time.Second, func() error { return errors.Join(m.connected(c), m.columnRight(c)) })
		}
		m.entryLeaves(t, old, start, 60*time.Second)
		m.wide("after the leader " + old.name + " was killed")

		// Only the new leader can now say a cluster left.
		stopped := time.Now()
		for _, a := range m.liveAgents("cluster-2") {
			must(a.proc.Stop())
			a.gone = true
		}
		testenv.Eventually(t, "cluster-2 Connected=False", 30*time.Second, func() error {
			all, err := m.clusters()
			if err != nil {
				return err
			}
			if c := kcCondition(all["cluster-2"], meshv1alpha1.ConditionConnected); c.Status != metav1.ConditionFalse || c.Reason != "Disconnected" {
				return fmt.Errorf("Connected=%s (%s: %s)", c.Status, c.Reason, c.Message)
			}
			if s := kcStreams(all["cluster-2"]); len(s) != 0 {
				return fmt.Errorf("status.replicas still report streams %v", s)
			}
			return nil
		})
		m.figure("both cluster-2 agents stopped: Connected=False %s later", time.Since(stopped).Round(100*time.Millisecond))
		if err := m.connected("cluster-1"); err != nil {
			t.Error(err)
		}
		m.wide("with cluster-2's agents stopped")
		out, code := m.check()
		if code != 1 || !strings.Contains(out, "cluster-2") {
			t.Errorf("relayctl check with cluster-2's agents stopped: exit %d, want 1 and cluster-2 named:\n%s", code, out)
		}
	})

	// A rollout: three new replicas that sign two-minute client
	// certificates join the Service, the old ones leave it and stop with
	// SIGTERM, one at a time.
	t.Run("a rollout: each old replica stopped with SIGTERM loses its agents within 10s and leaves status at once", func(t *testing.T) {
		old := m.live()
		for _, n := range []string{"relay-server-4", "relay-server-5", "relay-server-6"} {
			m.startServer(n, "--client-certificate-ttl", "2m")
		}
		for _, s := range old {
			lb.Remove(s.addr)
		}
		for _, s := range old {
			start := time.Now()
			m.stopServer(t, s, false)
			took := m.entryLeaves(t, s, start, 20*time.Second)
			m.figure("%s's status entries and Lease gone %s after SIGTERM", s.name, took.Round(100*time.Millisecond))
		}
		m.wide("after the rollout")
		if err := m.connected("cluster-1"); err != nil {
			t.Error(err)
		}
	})

	var cluster2Issued time.Time
	t.Run("cluster-2 bootstraps again with a fresh token, then its agents stop: CertificateExpiring once a third of the certificate's life is left", func(t *testing.T) {
		register("cluster-2")
		m.startAgent("cluster-2", "relay-agent-cluster-2-c")
		m.startAgent("cluster-2", "relay-agent-cluster-2-d")
		testenv.Eventually(t, "cluster-2 connected", 60*time.Second, func() error { return m.connected("cluster-2") })
		cluster2Issued = time.Now()
		testenv.Eventually(t, "cluster-2's status names the certificate its secret holds", 10*time.Second, func() error { return m.statusSerialMatches("cluster-2") })
		all, err := m.clusters()
		must(err)
		if cert := all["cluster-2"].Status.ClientCertificate; cert.NotAfter.Sub(cert.NotBefore.Time) > 3*time.Minute {
			t.Fatalf("cluster-2's certificate lives %s, want the new replicas' two minutes", cert.NotAfter.Sub(cert.NotBefore.Time))
		}
		for _, a := range m.liveAgents("cluster-2") {
			must(a.proc.Stop())
			a.gone = true
		}
		m.wide("cluster-2 bootstrapped with a two-minute certificate, its agents stopped")
	})

	t.Run("a revocation evicts and refuses cluster-1; registered again, it bootstraps and renews", func(t *testing.T) {
		before, err := m.serial("cluster-1")
		must(err)
		if _, stderr, code := mesh.Relayctl(ctx, "revoke", "cluster-1", "--mgmt-context", "mgmt"); code != 0 {
			t.Fatalf("relayctl revoke cluster-1: exit %d: %s", code, stderr)
		}
		m.eventSeen(t, "cluster-1", "Evicted", 30*time.Second, "closed")
		m.eventSeen(t, "cluster-1", "Refused", 30*time.Second, "refused")
		testenv.Eventually(t, "cluster-1 Connected=False, CertificateValid=False (Revoked)", 30*time.Second, func() error {
			all, err := m.clusters()
			if err != nil {
				return err
			}
			kc := all["cluster-1"]
			if c := kcCondition(kc, meshv1alpha1.ConditionConnected); c.Status != metav1.ConditionFalse {
				return fmt.Errorf("Connected=%s (%s)", c.Status, c.Message)
			}
			if c := kcCondition(kc, meshv1alpha1.ConditionCertificateValid); c.Status != metav1.ConditionFalse || c.Reason != "Revoked" {
				return fmt.Errorf("CertificateValid=%s (%s: %s)", c.Status, c.Reason, c.Message)
			}
			return nil
		})
		m.wide("cluster-1 revoked")
		register("cluster-1")
		registered := time.Now()
		testenv.Eventually(t, "cluster-1 connected with a new certificate", 90*time.Second, func() error {
			if s, err := m.serial("cluster-1"); err != nil || s == before {
				return fmt.Errorf("relay-client-tls-secret serial %s (%v), the revoked one %s", s, err, before)
			}
			return m.connected("cluster-1")
		})
		m.figure("cluster-1 registered again after its revocation: connected with a new certificate %s later", time.Since(registered).Round(100*time.Millisecond))
		bootstrapped, err := m.serial("cluster-1")
		must(err)
		m.eventSeen(t, "cluster-1", "Bootstrapped", 30*time.Second, bootstrapped)
		// Renewed at half its two-minute lifetime.
		testenv.Eventually(t, "cluster-1 renews", 90*time.Second, func() error {
			if s, err := m.serial("cluster-1"); err != nil || s == bootstrapped {
				return fmt.Errorf("relay-client-tls-secret serial %s (%v), still the bootstrapped one", s, err)
			}
			return nil
		})
		renewed, err := m.serial("cluster-1")
		must(err)
		m.eventSeen(t, "cluster-1", "Renewed", 30*time.Second, renewed, "for a renew")
		testenv.Eventually(t, "cluster-1's status names the renewed certificate", 15*time.Second, func() error { return m.statusSerialMatches("cluster-1") })
		if err := m.connected("cluster-1"); err != nil {
			t.Error(err)
		}
		m.wide("cluster-1 renewed")
	})

	t.Run("CertificateExpiring: on cluster-2, stopped, and not on cluster-1, which renews", func(t *testing.T) {
		serial, err := m.serial("cluster-2")
		must(err)
		// A third of 2m12s (two minutes and the signer's backdate) is
		// left 76s after the certificate was issued.
		ev := m.eventSeen(t, "cluster-2", "CertificateExpiring", time.Until(cluster2Issued.Add(2*time.Minute)), serial, "less than a third of its lifetime left")
		m.figure("CertificateExpiring on cluster-2 %s after its bootstrap", replicaEventTime(ev).Sub(cluster2Issued).Round(time.Second))
		all, err := m.clusters()
		must(err)
		if c := kcCondition(all["cluster-2"], meshv1alpha1.ConditionCertificateValid); c.Reason != "ExpiringSoon" && c.Reason != "Expired" {
			t.Errorf("cluster-2 CertificateValid=%s (%s: %s), want ExpiringSoon", c.Status, c.Reason, c.Message)
		}
		if evs, err := m.events("cluster-1", "CertificateExpiring"); err != nil || len(evs) != 0 {
			t.Errorf("cluster-1, connected and renewing at half its certificates' life, has CertificateExpiring Events %v (%v)", evs, err)
		}
		m.wide("at the end")
	})
}
