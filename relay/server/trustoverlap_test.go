package server

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	testingclock "k8s.io/utils/clock/testing"

	meshv1alpha1 "github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/pkg/pki"
	relayv1 "github.com/meshrelay/meshrelay/relay/api/v1"
)

// overlapCase is a policy status for advanceOverlap and what it must make
// of it.
type overlapCase struct {
	name string
	st   meshv1alpha1.RootTrustPolicyStatus
	root string
	// out are the clusters not in scope.
	out []string
	now time.Time

	trusted, previous, pending, retired []string
	changed                             bool
	// retireAfter is status.rootChange.retireAfter; zero when unset.
	retireAfter time.Time
	// noChange says status.rootChange is nil.
	noChange bool
	// since is status.rootChange.since, when set.
	since time.Time
}

func TestAdvanceOverlap(t *testing.T) {
	t0 := time.Unix(1_000_000, 0)
	const ttl = time.Minute
	trusted := func(shas ...string) []meshv1alpha1.TrustedRoot {
		var out []meshv1alpha1.TrustedRoot
		for _, s := range shas {
			out = append(out, meshv1alpha1.TrustedRoot{SHA256: s})
		}
		return out
	}
	at := func(d time.Duration) *metav1.Time { return ptrTime(t0.Add(d)) }
	cluster := func(name, root string, since time.Duration) meshv1alpha1.ClusterIntermediateStatus {
		return meshv1alpha1.ClusterIntermediateStatus{Name: name, Serial: "01", Root: root, RootSince: at(since)}
	}
	changing := func(st meshv1alpha1.RootTrustPolicyStatus) meshv1alpha1.RootTrustPolicyStatus {
		st.Root = &meshv1alpha1.RootStatus{SHA256: "B"}
		st.TrustedRoots = trusted("B", "A")
		st.RootChange = &meshv1alpha1.RootChangeStatus{Since: *at(0)}
		return st
	}
	nine := []string{"B", "A", "r2", "r3", "r4", "r5", "r6", "r7", "r8"}
	for _, tc := range []overlapCase{
		{name: "a first root is the one trusted root", root: "A", now: t0, trusted: []string{"A"}, noChange: true},
		{name: "a status written before trusted roots trusts its root", st: meshv1alpha1.RootTrustPolicyStatus{Root: &meshv1alpha1.RootStatus{SHA256: "A"}},
			root: "A", now: t0, trusted: []string{"A"}, noChange: true},
		{name: "a new root heads the trusted roots; the clusters under the old one are pending", st: meshv1alpha1.RootTrustPolicyStatus{
			Root: &meshv1alpha1.RootStatus{SHA256: "A"}, TrustedRoots: trusted("A"),
			Clusters: []meshv1alpha1.ClusterIntermediateStatus{cluster("c1", "A", -time.Hour), cluster("c2", "A", -time.Hour)},
		}, root: "B", now: t0, trusted: []string{"B", "A"}, previous: []string{"A"}, pending: []string{"c1", "c2"}, changed: true, since: t0},
		{name: "a status written before trusted roots, under another root, overlaps with that root", st: meshv1alpha1.RootTrustPolicyStatus{
			Root:     &meshv1alpha1.RootStatus{SHA256: "A"},
			Clusters: []meshv1alpha1.ClusterIntermediateStatus{cluster("c1", "A", -time.Hour)},
		}, root: "B", now: t0, trusted: []string{"B", "A"}, previous: []string{"A"}, pending: []string{"c1"}, changed: true, since: t0},
		{name: "a cluster issued an intermediate before its agent reported its root is pending", st: changing(meshv1alpha1.RootTrustPolicyStatus{
			Clusters: []meshv1alpha1.ClusterIntermediateStatus{{Name: "c1", Serial: "01"}},
		}), root: "B", now: t0, trusted: []string{"B", "A"}, previous: []string{"A"}, pending: []string{"c1"}, since: t0},
		{name: "a cluster out of scope, or that never held an intermediate of the policy, is not waited for", st: changing(meshv1alpha1.RootTrustPolicyStatus{
			Clusters: []meshv1alpha1.ClusterIntermediateStatus{cluster("c1", "A", 0), cluster("gone", "A", 0), {Name: "failing", LastError: "forbidden"}},
		}), root: "B", out: []string{"gone"}, now: t0, trusted: []string{"B", "A"}, previous: []string{"A"}, pending: []string{"c1"}, since: t0},
		{name: "once every cluster moved, the replaced roots stay workloadCertTTL after the last move", st: changing(meshv1alpha1.RootTrustPolicyStatus{
			Clusters: []meshv1alpha1.ClusterIntermediateStatus{cluster("c1", "B", 10*time.Second), cluster("c2", "B", 20*time.Second)},
		}), root: "B", now: t0.Add(79 * time.Second), trusted: []string{"B", "A"}, previous: []string{"A"}, retireAfter: t0.Add(80 * time.Second), since: t0},
		{name: "workloadCertTTL after the last move, the replaced roots leave", st: changing(meshv1alpha1.RootTrustPolicyStatus{
			Clusters: []meshv1alpha1.ClusterIntermediateStatus{cluster("c1", "B", 10*time.Second), cluster("c2", "B", 20*time.Second)},
		}), root: "B", now: t0.Add(80 * time.Second), trusted: []string{"B"}, retired: []string{"A"}, noChange: true},
		{name: "a cluster that moved before the change counts from the change", st: changing(meshv1alpha1.RootTrustPolicyStatus{
			Clusters: []meshv1alpha1.ClusterIntermediateStatus{cluster("c1", "B", -time.Hour)},
		}), root: "B", now: t0, trusted: []string{"B", "A"}, previous: []string{"A"}, retireAfter: t0.Add(ttl), since: t0},
		{name: "with no cluster to wait for, the replaced roots stay workloadCertTTL after the change", st: changing(meshv1alpha1.RootTrustPolicyStatus{}),
			root: "B", now: t0.Add(time.Second), trusted: []string{"B", "A"}, previous: []string{"A"}, retireAfter: t0.Add(ttl), since: t0},
		{name: "a third root during an overlap keeps both replaced roots and starts again", st: changing(meshv1alpha1.RootTrustPolicyStatus{
			Clusters: []meshv1alpha1.ClusterIntermediateStatus{cluster("c1", "B", 10*time.Second), cluster("c2", "A", -time.Hour)},
		}), root: "C", now: t0.Add(30 * time.Second), trusted: []string{"C", "B", "A"}, previous: []string{"B", "A"}, pending: []string{"c1", "c2"}, changed: true,
			since: t0.Add(30 * time.Second)},
		{name: "going back to a replaced root puts it first", st: changing(meshv1alpha1.RootTrustPolicyStatus{
			Clusters: []meshv1alpha1.ClusterIntermediateStatus{cluster("c1", "A", -time.Hour), cluster("c2", "B", 10*time.Second)},
		}), root: "A", now: t0.Add(30 * time.Second), trusted: []string{"A", "B"}, previous: []string{"B"}, pending: []string{"c2"}, changed: true,
			since: t0.Add(30 * time.Second)},
		{name: "at most maxTrustedRoots are trusted, the oldest replaced ones leaving first", st: meshv1alpha1.RootTrustPolicyStatus{
			Root: &meshv1alpha1.RootStatus{SHA256: "B"}, TrustedRoots: trusted(nine[1:]...), RootChange: &meshv1alpha1.RootChangeStatus{Since: *at(0)},
		}, root: "B", now: t0, trusted: nine[:maxTrustedRoots], previous: nine[1:maxTrustedRoots], changed: true, retireAfter: t0.Add(ttl), since: t0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := tc.st.DeepCopy()
			inScope := func(c string) bool { return !slices.Contains(tc.out, c) }
			o := advanceOverlap(st, &meshv1alpha1.RootStatus{SHA256: tc.root}, inScope, ttl, tc.now)
			var got []string
			for _, r := range st.TrustedRoots {
				got = append(got, r.SHA256)
			}
			if !slices.Equal(got, tc.trusted) {
				t.Errorf("status.trustedRoots %v, want %v", got, tc.trusted)
			}
			if !slices.Equal(o.previous, tc.previous) || !slices.Equal(o.retired, tc.retired) || o.changed != tc.changed {
				t.Errorf("previous %v, retired %v, changed %v; want %v, %v, %v", o.previous, o.retired, o.changed, tc.previous, tc.retired, tc.changed)
			}
			if tc.noChange {
				if st.RootChange != nil {
					t.Errorf("status.rootChange %+v, want none", st.RootChange)
				}
				return
			}
			rc := st.RootChange
			if rc == nil {
				t.Fatal("no status.rootChange")
			}
			if !slices.Equal(rc.Pending, tc.pending) || rc.PendingCount != len(tc.pending) || !slices.Equal(o.pending, tc.pending) {
				t.Errorf("pending %v (count %d), want %v", rc.Pending, rc.PendingCount, tc.pending)
			}
			if !rc.Since.Time.Equal(tc.since) {
				t.Errorf("since %s, want %s", rc.Since.Time, tc.since)
			}
			var retire time.Time
			if rc.RetireAfter != nil {
				retire = rc.RetireAfter.Time
			}
			if !retire.Equal(tc.retireAfter) || !o.retireAt.Equal(tc.retireAfter) {
				t.Errorf("retireAfter %s (overlap says %s), want %s", retire, o.retireAt, tc.retireAfter)
			}
		})
	}
}

// overlapTrust is a trust whose cluster c1 has a pull stream, under a
// policy with root B whose previous roots the test sets.
type overlapTrust struct {
	tr   *trust
	clk  *testingclock.FakeClock
	pull *stream
	root *pki.Certified
}

func newOverlapTrust(t *testing.T, previous ...string) *overlapTrust {
	t.Helper()
	root, err := pki.NewRootCA(pki.Options{CommonName: "root B", TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	clk := testingclock.NewFakeClock(time.Unix(1_000_000, 0))
	conns := newConnections()
	o := &overlapTrust{tr: newTestTrust(&config.Server{}, conns, newMetrics(prometheus.NewRegistry()), clk), clk: clk, root: root}
	o.tr.State.setPolicy(&trustPolicy{name: "mesh", signer: root, rootPEM: root.CAPEM(), rootSHA256: pki.Fingerprint(root.Cert), ttl: time.Hour, previous: previous, autoRestart: true})
	o.pull = conns.open("c1", pullStream, nil, nil)
	return o
}

// drops returns the root-cert.pem rewrites c1 was sent since the last
// call; asks for a CSR are skipped.
func (o *overlapTrust) drops(t *testing.T) []*relayv1.IntermediateIssued {
	t.Helper()
	var out []*relayv1.IntermediateIssued
	for len(o.pull.instructions) > 0 {
		in := <-o.pull.instructions
		switch {
		case in.GetIntermediateIssued() != nil:
			out = append(out, in.GetIntermediateIssued())
		case in.GetIssueIntermediate() == nil:
			t.Fatalf("instruction %v", in)
		}
	}
	return out
}

// held is a report of an intermediate of policy mesh that is not due for
// renewal, under root, with root-cert.pem's roots certs.
func (o *overlapTrust) held(root string, certs ...string) *relayv1.IstioCAStatus {
	now := o.clk.Now()
	return &relayv1.IstioCAStatus{Policy: "mesh", NotBefore: now.Add(-time.Hour).Unix(), NotAfter: now.Add(10 * time.Hour).Unix(), RootSha256: root, RootCertSha256: certs}
}

func TestTheEndOfAnOverlapAsksClustersToDropTheReplacedRoots(t *testing.T) {
	const a, c = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"
	t.Run("a cluster holding a root no longer trusted is asked once per askAgain, to keep the intermediate", func(t *testing.T) {
		o := newOverlapTrust(t)
		b := pki.Fingerprint(o.root.Cert)
		o.tr.report("c1", o.held(b, b, a))
		got := o.drops(t)
		if len(got) != 1 || len(got[0].GetCertificateChain()) != 0 || string(got[0].GetRootCertificate()) != string(o.root.CAPEM()) ||
			len(got[0].GetPreviousRootSha256()) != 0 || got[0].GetPolicy() != "mesh" || !got[0].GetAutoRestartPods() {
			t.Fatalf("sent %v, want one rewrite of root-cert.pem to the policy's root alone", got)
		}
		o.clk.Step(askAgain - time.Second)
		o.tr.check("c1")
		if got := o.drops(t); len(got) != 0 {
			t.Fatalf("asked again %d times within askAgain", len(got))
		}
		o.clk.Step(time.Second)
		o.tr.check("c1")
		if got := o.drops(t); len(got) != 1 {
			t.Fatalf("asked %d times after askAgain, want once", len(got))
		}
	})
	for _, tc := range []struct {
		name     string
		previous []string
		rep      func(o *overlapTrust, b string) *relayv1.IstioCAStatus
	}{
		{"a replaced root still overlapping stays", []string{a}, func(o *overlapTrust, b string) *relayv1.IstioCAStatus { return o.held(b, b, a) }},
		{"an intermediate still under the replaced root keeps it", nil, func(o *overlapTrust, _ string) *relayv1.IstioCAStatus { return o.held(a, a, c) }},
		{"an agent that does not report root-cert.pem's roots is not asked", nil, func(o *overlapTrust, b string) *relayv1.IstioCAStatus { return o.held(b) }},
		{"a list longer than maxTrustedRoots is ignored", nil, func(o *overlapTrust, b string) *relayv1.IstioCAStatus {
			return o.held(b, b, a, c, c, c, c, c, c, c)
		}},
		{"a list with a malformed fingerprint is ignored", nil, func(o *overlapTrust, b string) *relayv1.IstioCAStatus { return o.held(b, b, "AAAA") }},
		{"a failure report under another policy is not its holding", nil, func(o *overlapTrust, b string) *relayv1.IstioCAStatus {
			r := o.held(b, b, a)
			r.Policy = "other"
			return r
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := newOverlapTrust(t, tc.previous...)
			o.tr.report("c1", tc.rep(o, pki.Fingerprint(o.root.Cert)))
			o.clk.Step(askAgain)
			o.tr.check("c1")
			for _, in := range o.drops(t) {
				if len(in.GetCertificateChain()) == 0 {
					t.Errorf("asked to rewrite root-cert.pem: %v", in)
				}
			}
		})
	}
}

func TestReportsLeaveWhatCacertsHoldsForTheStatusWhenItChanges(t *testing.T) {
	o := newOverlapTrust(t)
	b := pki.Fingerprint(o.root.Cert)
	holds := func() []string {
		var out []string
		for _, r := range o.tr.Results.take("mesh") {
			if r.kind == resultHolds {
				out = append(out, fmt.Sprintf("%s:%s:%v", r.cluster, r.root, r.trusted))
			}
		}
		return out
	}
	onB := o.held(b, b)
	for range 3 {
		o.tr.report("c1", onB)
	}
	if got := holds(); !slices.Equal(got, []string{"c1:" + b + ":[" + b + "]"}) {
		t.Errorf("holds %v after three equal reports, want one", got)
	}
	failed := o.held(b, b)
	failed.Error = "forbidden"
	o.tr.report("c1", failed)
	o.tr.report("c1", &relayv1.IstioCAStatus{Policy: "mesh", Error: "forbidden"})
	if got := holds(); len(got) != 0 {
		t.Errorf("holds %v from failure reports, want none: their policy is the one that failed", got)
	}
	o.tr.report("c1", onB)
	if got := holds(); len(got) != 0 {
		t.Errorf("holds %v after failures and the same holding again, want none", got)
	}
	o.tr.report("c1", o.held("a"))
	if got := holds(); !slices.Equal(got, []string{"c1:a:[]"}) {
		t.Errorf("holds %v after a change, want it", got)
	}
}

func TestIntermediatesIssuedDuringAnOverlapNameTheReplacedRoots(t *testing.T) {
	o := newOverlapTrust(t, "aaaa")
	key, err := pki.GenerateKey(pki.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.NewCSR(key, pki.IstiodDNSName)
	if err != nil {
		t.Fatal(err)
	}
	_, in, err := signIntermediate(o.tr.State.serving("c1"), "c1", csr, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if got := in.GetIntermediateIssued().GetPreviousRootSha256(); !slices.Equal(got, []string{"aaaa"}) {
		t.Errorf("previous roots %v, want the policy's", got)
	}
}

func TestCarriedPrevious(t *testing.T) {
	for _, tc := range []struct {
		name string
		old  *trustPolicy
		root string
		want []string
	}{
		{"a first load keeps nothing", nil, "B", nil},
		{"the same root keeps what it kept", &trustPolicy{rootSHA256: "B", previous: []string{"A"}}, "B", []string{"A"}},
		{"a new root keeps the old one first", &trustPolicy{rootSHA256: "B", previous: []string{"A"}}, "C", []string{"B", "A"}},
		{"a root kept before is not kept beside itself", &trustPolicy{rootSHA256: "B", previous: []string{"A"}}, "A", []string{"B"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := carriedPrevious(tc.old, &trustPolicy{rootSHA256: tc.root}); !slices.Equal(got, tc.want) {
				t.Errorf("carriedPrevious = %v, want %v", got, tc.want)
			}
		})
	}
}
