package server

import (
	"slices"
	"testing"
	"time"

	meshv1alpha1 "github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
)

func TestPendingResultsKeepWhatTheStatusStillNeeds(t *testing.T) {
	t0 := time.Unix(1_000_000, 0)
	failed := func(c, msg string) clusterResult {
		return clusterResult{cluster: c, kind: resultFailed, at: t0, message: msg}
	}
	overlapped := clusterResult{cluster: "c1", kind: resultOverlapped, at: t0, message: "served by old"}
	issued := clusterResult{cluster: "c1", kind: resultIssued, at: t0, serial: "ab", notAfter: t0.Add(time.Hour)}
	holds := func(root string, at time.Duration) clusterResult {
		return clusterResult{cluster: "c1", kind: resultHolds, at: t0.Add(at), root: root}
	}
	for _, tc := range []struct {
		name string
		add  []clusterResult
		want []string
	}{
		{"a later failure replaces an earlier one", []clusterResult{failed("c1", "a"), failed("c1", "b")}, []string{"c1:b"}},
		{"an issue replaces every earlier result of its cluster", []clusterResult{failed("c1", "a"), overlapped, issued}, []string{"c1:ab"}},
		{"a failure after an issue keeps the issue", []clusterResult{issued, failed("c1", "a")}, []string{"c1:ab", "c1:a"}},
		{"an overlap keeps an earlier issue and replaces an earlier failure", []clusterResult{issued, failed("c1", "a"), overlapped}, []string{"c1:ab", "c1:served by old"}},
		{"another cluster's results are kept", []clusterResult{failed("c2", "x"), failed("c1", "a"), issued}, []string{"c2:x", "c1:ab"}},
		{"what cacerts holds replaces only what it held before", []clusterResult{holds("A", 0), failed("c1", "a"), issued, holds("B", 0)}, []string{"c1:ab", "c1:holds B"}},
		{"an issue or a failure keeps what cacerts holds", []clusterResult{holds("A", 0), issued, failed("c1", "a")}, []string{"c1:holds A", "c1:ab", "c1:a"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newPendingResults()
			for i, r := range tc.add {
				if first := p.add("mesh", r); first != (i == 0) {
					t.Errorf("add %d: first = %v", i, first)
				}
			}
			got := describe(p.take("mesh"))
			if !slices.Equal(got, tc.want) {
				t.Errorf("pending %v, want %v", got, tc.want)
			}
			if rest := p.take("mesh"); len(rest) != 0 {
				t.Errorf("take left %v", describe(rest))
			}
		})
	}
}

func TestResultsPutBackComeBeforeNewerOnes(t *testing.T) {
	t0 := time.Unix(1_000_000, 0)
	p := newPendingResults()
	p.add("mesh", clusterResult{cluster: "c1", kind: resultIssued, at: t0, serial: "ab"})
	taken := p.take("mesh")
	p.add("mesh", clusterResult{cluster: "c1", kind: resultFailed, at: t0, message: "later"})
	p.putBack("mesh", taken)
	if got := describe(p.take("mesh")); !slices.Equal(got, []string{"c1:ab", "c1:later"}) {
		t.Errorf("pending %v, want the issue then the later failure", got)
	}
	p.add("gone", clusterResult{cluster: "c1", message: "x"})
	p.drop("gone")
	if got := p.policies(); len(got) != 0 {
		t.Errorf("policies with results after drop: %v", got)
	}
}

func TestApplyResultsWritesEntriesInOrderSortedByCluster(t *testing.T) {
	t0 := time.Unix(1_000_000, 500_000_000)
	st := &meshv1alpha1.RootTrustPolicyStatus{Clusters: []meshv1alpha1.ClusterIntermediateStatus{{Name: "b", Issued: true, Serial: "01"}}}
	applyResults(st, []clusterResult{
		{cluster: "c", kind: resultIssued, at: t0, serial: "ff", notAfter: t0.Add(time.Hour)},
		{cluster: "a", kind: resultFailed, at: t0, message: "refused"},
		{cluster: "b", kind: resultOverlapped, at: t0, message: "served by old"},
		{cluster: "c", kind: resultFailed, at: t0, message: "agent: forbidden"},
	})
	var names []string
	for _, c := range st.Clusters {
		names = append(names, c.Name)
	}
	if !slices.Equal(names, []string{"a", "b", "c"}) {
		t.Fatalf("entries %v, want a, b, c", names)
	}
	a, b, c := st.Clusters[0], st.Clusters[1], st.Clusters[2]
	if a.Issued || a.LastError != "refused" || !a.LastErrorTime.Time.Equal(t0.Truncate(time.Second)) {
		t.Errorf("a failure: %+v", a)
	}
	if b.Issued || b.Serial != "01" || b.LastError != "served by old" {
		t.Errorf("an overlap clears issued, keeps the serial and says why: %+v", b)
	}
	if !c.Issued || c.Serial != "ff" || c.IssuedAt == nil || c.LastError != "agent: forbidden" {
		t.Errorf("an issue then a failure: %+v", c)
	}
}

func describe(rs []clusterResult) []string {
	var out []string
	for _, r := range rs {
		what := r.message
		switch r.kind {
		case resultIssued:
			what = r.serial
		case resultHolds:
			what = "holds " + r.root
		}
		out = append(out, r.cluster+":"+what)
	}
	return out
}

func TestWhatCacertsHoldsKeepsWhenTheClusterMovedToItsRoot(t *testing.T) {
	t0 := time.Unix(1_000_000, 0)
	holds := func(root string, at time.Duration, trusted ...string) clusterResult {
		return clusterResult{cluster: "c1", kind: resultHolds, at: t0.Add(at), root: root, trusted: trusted}
	}
	p := newPendingResults()
	p.add("mesh", holds("B", time.Minute, "B", "A"))
	p.add("mesh", holds("B", 2*time.Minute, "B"))
	rs := p.take("mesh")
	if len(rs) != 1 || !rs[0].at.Equal(t0.Add(time.Minute)) || !slices.Equal(rs[0].trusted, []string{"B"}) {
		t.Fatalf("pending %+v, want the later roots with the earlier time", rs)
	}
	st := &meshv1alpha1.RootTrustPolicyStatus{}
	applyResults(st, rs)
	applyResults(st, []clusterResult{holds("B", time.Hour, "B")})
	c := st.Clusters[0]
	if c.Root != "B" || !c.RootSince.Time.Equal(t0.Add(time.Minute)) || !slices.Equal(c.TrustedRoots, []string{"B"}) {
		t.Errorf("entry %+v: want root B since the first report of it", c)
	}
	applyResults(st, []clusterResult{holds("C", time.Hour, "C", "B")})
	c = st.Clusters[0]
	if c.Root != "C" || !c.RootSince.Time.Equal(t0.Add(time.Hour)) || !slices.Equal(c.TrustedRoots, []string{"C", "B"}) {
		t.Errorf("entry %+v: want root C since its report", c)
	}
}
