package server

import (
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	testingclock "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/meshrelay/meshrelay/internal/testenv"
	meshv1alpha1 "github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/pkg/pki"
	relayv1 "github.com/meshrelay/meshrelay/relay/api/v1"
)

// TestRootChangeOverlapsAcrossReplicas runs the RootTrustPolicy reconcilers
// of two relay-server replicas, each with its own trust state, against a
// real API server while the policy's secret gets a new root: the policy's
// status keeps the replaced root trusted, names the registered clusters
// whose intermediate is still under it, and lets it go workloadCertTTL
// after the last cluster moved; a replica that starts meanwhile learns the
// overlap from the status; each replica issues intermediates that name the
// replaced root while it overlaps, and afterwards asks a cluster still
// holding it to drop it.
func TestRootChangeOverlapsAcrossReplicas(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Names: []string{"mgmt"}})
	c := env.Clusters[0]
	ctx := t.Context()
	const ns, workloadTTL = "gloo-mesh", time.Minute
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(c.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}))
	for _, name := range []string{"c1", "c2", "c3"} {
		must(c.Client.Create(ctx, &meshv1alpha1.KubernetesCluster{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}))
	}
	newRoot := func(cn string) (*pki.Certified, map[string][]byte) {
		root, err := pki.NewRootCA(pki.Options{CommonName: cn, TTL: 24 * time.Hour})
		must(err)
		key, err := root.KeyPEM()
		must(err)
		return root, map[string][]byte{"root-cert.pem": root.CAPEM(), "key.pem": key}
	}
	rootA, dataA := newRoot("root A")
	rootB, dataB := newRoot("root B")
	a, b := pki.Fingerprint(rootA.Cert), pki.Fingerprint(rootB.Cert)
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "mesh-root"}, Data: dataA}
	must(c.Client.Create(ctx, secret))
	policy := &meshv1alpha1.RootTrustPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "mesh"}}
	policy.Spec.Config.MgmtServerCa.SecretRef = &meshv1alpha1.SecretReference{Name: "mesh-root"}
	policy.Spec.Config.WorkloadCertTTL = &metav1.Duration{Duration: workloadTTL}
	must(c.Client.Create(ctx, policy))

	clk := testingclock.NewFakeClock(time.Now().Truncate(time.Second))
	cfg := config.DefaultServer()
	type replica struct {
		r       *trustReconciler
		metrics *metrics
	}
	start := func(name string) *replica {
		m := newMetrics(prometheus.NewRegistry())
		return &replica{metrics: m, r: newTrustReconciler(trustReconcilerOptions{
			Client: c.Client, API: c.Client, Namespace: ns, RelaySecrets: relaySecretsOf(&cfg),
			State: newTrustState(), Results: newPendingResults(), Queue: newPolicyQueue(ns),
			Metrics: m, Clock: clk, Log: testr.New(t).WithValues("replica", name),
		})}
	}
	reconcileOn := func(r *replica) reconcile.Result {
		t.Helper()
		res, err := r.r.Reconcile(ctx, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: ns, Name: "mesh"}})
		must(err)
		return res
	}
	status := func() meshv1alpha1.RootTrustPolicyStatus {
		t.Helper()
		var p meshv1alpha1.RootTrustPolicy
		must(c.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: "mesh"}, &p))
		return p.Status
	}
	// expect checks the status's trusted roots and pending clusters, and
	// what each replica's loaded policy and metrics say.
	expect := func(what string, trusted, pending []string, replicas ...*replica) meshv1alpha1.RootTrustPolicyStatus {
		t.Helper()
		st := status()
		var got []string
		for _, r := range st.TrustedRoots {
			got = append(got, r.SHA256)
		}
		if !slices.Equal(got, trusted) {
			t.Fatalf("%s: status.trustedRoots %v, want %v", what, got, trusted)
		}
		switch {
		case len(trusted) == 1 && st.RootChange != nil:
			t.Errorf("%s: status.rootChange %+v, want none", what, st.RootChange)
		case len(trusted) > 1 && (st.RootChange == nil || !slices.Equal(st.RootChange.Pending, pending) || st.RootChange.PendingCount != len(pending)):
			t.Errorf("%s: status.rootChange %+v, want pending %v", what, st.RootChange, pending)
		}
		for i, r := range replicas {
			p := r.r.State.policy("mesh")
			if p == nil || p.rootSHA256 != trusted[0] || !slices.Equal(p.previous, trusted[1:]) {
				t.Errorf("%s: replica %d loaded %+v, want root %s keeping %v", what, i, p, trusted[0], trusted[1:])
			}
			if series := rootSeries(t, r.metrics, "mesh"); !slices.Equal(slices.Sorted(maps.Keys(series)), slices.Sorted(slices.Values(trusted))) {
				t.Errorf("%s: replica %d root expiry series %v, want %v", what, i, series, trusted)
			}
		}
		return st
	}
	holds := func(r *replica, cluster, root string) {
		r.r.Results.add("mesh", clusterResult{cluster: cluster, kind: resultIssued, at: clk.Now(), serial: "0" + cluster, notAfter: clk.Now().Add(time.Hour)})
		r.r.Results.add("mesh", clusterResult{cluster: cluster, kind: resultHolds, at: clk.Now(), root: root, trusted: []string{root}})
	}

	ra := start("a")
	reconcileOn(ra)
	for _, cl := range []string{"c1", "c2", "c3"} {
		holds(ra, cl, a)
	}
	reconcileOn(ra)
	expect("before the change", []string{a}, nil, ra)

	secret.Data = dataB
	must(c.Client.Update(ctx, secret))
	reconcileOn(ra)
	st := expect("the secret holds a new root", []string{b, a}, []string{"c1", "c2", "c3"}, ra)
	if st.RootChange.RetireAfter != nil || st.Root.SHA256 != b {
		t.Errorf("status.root %s, rootChange %+v: want root B and no retireAfter while clusters are pending", st.Root.SHA256, st.RootChange)
	}

	// A deregistered cluster is not waited for; a replica that starts now
	// learns the overlap from the status, and its intermediates say so.
	must(c.Client.Delete(ctx, &meshv1alpha1.KubernetesCluster{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "c3"}}))
	rb := start("b")
	reconcileOn(rb)
	expect("c3 deregistered, replica b started", []string{b, a}, []string{"c1", "c2"}, rb)
	key, err := pki.GenerateKey(pki.ECDSAP256)
	must(err)
	csr, err := pki.NewCSR(key, pki.IstiodDNSName)
	must(err)
	if _, in, err := signIntermediate(rb.r.State.serving("c1"), "c1", csr, clk.Now()); err != nil || !slices.Equal(in.GetIntermediateIssued().GetPreviousRootSha256(), []string{a}) {
		t.Errorf("replica b's intermediate names previous roots %v (%v), want root A", in.GetIntermediateIssued().GetPreviousRootSha256(), err)
	}

	clk.Step(10 * time.Second)
	holds(ra, "c1", b)
	reconcileOn(ra)
	expect("c1 moved", []string{b, a}, []string{"c2"}, ra)
	clk.Step(10 * time.Second)
	moved := clk.Now()
	holds(rb, "c2", b)
	res := reconcileOn(rb)
	st = expect("c2 moved", []string{b, a}, nil, rb)
	if st.RootChange.RetireAfter == nil || !st.RootChange.RetireAfter.Time.Equal(moved.Add(workloadTTL)) {
		t.Errorf("retireAfter %v, want workloadCertTTL after the last move, %s", st.RootChange.RetireAfter, moved.Add(workloadTTL))
	}
	if res.RequeueAfter != workloadTTL {
		t.Errorf("requeued after %s, want when the replaced root leaves, %s", res.RequeueAfter, workloadTTL)
	}

	clk.Step(workloadTTL - time.Second)
	reconcileOn(ra)
	expect("a second before retireAfter", []string{b, a}, nil, ra)
	clk.Step(time.Second)
	reconcileOn(ra)
	expect("at retireAfter", []string{b}, nil, ra)
	reconcileOn(rb)
	expect("replica b after the overlap", []string{b}, nil, ra, rb)

	// Replica b asks a cluster still holding the replaced root to drop it.
	conns := newConnections()
	tr := newTrust(trustOptions{State: rb.r.State, Results: rb.r.Results, Queue: rb.r.Queue, Conns: conns, Metrics: rb.metrics, Clock: clk, Log: testr.New(t)})
	pull := conns.open("c2", pullStream, nil, nil)
	tr.report("c2", &relayv1.IstioCAStatus{Policy: "mesh", NotBefore: clk.Now().Add(-time.Hour).Unix(), NotAfter: clk.Now().Add(10 * time.Hour).Unix(), RootSha256: b, RootCertSha256: []string{b, a}})
	var drops int
	for len(pull.instructions) > 0 {
		in := (<-pull.instructions).GetIntermediateIssued()
		if in != nil && len(in.GetCertificateChain()) == 0 && string(in.GetRootCertificate()) == string(rootB.CAPEM()) && len(in.GetPreviousRootSha256()) == 0 {
			drops++
		}
	}
	if drops != 1 {
		t.Errorf("c2 was asked %d times to drop root A from root-cert.pem, want once", drops)
	}
}

// rootSeries returns the relay_trust_policy_root_expiry_timestamp_seconds
// series of policy, by root fingerprint.
func rootSeries(t *testing.T, m *metrics, policy string) map[string]float64 {
	t.Helper()
	ch := make(chan prometheus.Metric, 16)
	m.trustRoots.expiry.Collect(ch)
	close(ch)
	out := map[string]float64{}
	for pm := range ch {
		var d dto.Metric
		if err := pm.Write(&d); err != nil {
			t.Fatal(err)
		}
		labels := map[string]string{}
		for _, l := range d.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		if labels["policy"] == policy {
			out[labels["sha256"]] = d.GetGauge().GetValue()
		}
	}
	return out
}
