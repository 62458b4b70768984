package server

import (
	"strings"
	"testing"
	"time"

	relayv1 "github.com/meshrelay/meshrelay/relay/api/v1"
)

func TestRenewalReason(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	p := &trustPolicy{name: "mesh", rootSHA256: "aa"}
	ok := func(notBefore, notAfter int64) *relayv1.IstioCAStatus {
		return &relayv1.IstioCAStatus{Policy: "mesh", RootSha256: "aa", NotBefore: notBefore, NotAfter: notAfter}
	}
	for _, tc := range []struct {
		name string
		rep  *relayv1.IstioCAStatus
		want string
	}{
		{"no cacerts", &relayv1.IstioCAStatus{}, "no intermediate"},
		{"another policy's cacerts", &relayv1.IstioCAStatus{Policy: "other", RootSha256: "aa", NotAfter: now.Unix() + 1000}, `it says "other"`},
		{"a cacerts nobody annotated", &relayv1.IstioCAStatus{RootSha256: "aa", NotAfter: now.Unix() + 1000}, `it says ""`},
		{"another root", &relayv1.IstioCAStatus{Policy: "mesh", RootSha256: "bb", NotAfter: now.Unix() + 1000}, "root changed"},
		// Lifetime 1000 s: renewal when 100 s are left.
		{"well inside its lifetime", ok(now.Unix()-500, now.Unix()+500), ""},
		{"one second before the renewal time", ok(now.Unix()-899, now.Unix()+101), ""},
		{"at the renewal time", ok(now.Unix()-900, now.Unix()+100), "renewal window"},
		{"expired", ok(now.Unix()-2000, now.Unix()-1000), "renewal window"},
		{"a validity that ends before it starts", ok(now.Unix()+10, now.Unix()+5), "unusable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := renewalReason(tc.rep, p, now)
			if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
				t.Errorf("renewalReason = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestDecideSaysWhenToAskForACSR(t *testing.T) {
	t0 := time.Unix(1_000_000, 0)
	mesh := &trustPolicy{name: "mesh", rootSHA256: "aa", created: t0}
	current := &relayv1.IstioCAStatus{Policy: "mesh", RootSha256: "aa", NotBefore: t0.Unix() - 10, NotAfter: t0.Unix() + 1_000_000}
	failed := &relayv1.IstioCAStatus{Policy: "mesh", Error: "forbidden"}
	for _, tc := range []struct {
		name     string
		policies []*trustPolicy
		report   *relayv1.IstioCAStatus
		// asked is when the cluster was last asked, under root aa unless
		// askedRoot says otherwise; zero means never.
		asked     time.Duration
		askedRoot string
		now       time.Duration
		want      bool
	}{
		{name: "a cluster whose agent has not reported is not asked", policies: []*trustPolicy{mesh}},
		{name: "a cluster no policy serves is not asked", report: &relayv1.IstioCAStatus{}},
		{name: "a cluster with no cacerts is asked at once", policies: []*trustPolicy{mesh}, report: &relayv1.IstioCAStatus{}, want: true},
		{name: "a cluster with a current intermediate is not asked", policies: []*trustPolicy{mesh}, report: current},
		{name: "a cluster asked a second short of askAgain ago is not asked again", policies: []*trustPolicy{mesh}, report: &relayv1.IstioCAStatus{},
			asked: time.Second, now: askAgain},
		{name: "a cluster asked askAgain ago is asked again", policies: []*trustPolicy{mesh}, report: &relayv1.IstioCAStatus{},
			asked: time.Second, now: askAgain + time.Second, want: true},
		{name: "a cluster asked under another root is asked at once", policies: []*trustPolicy{mesh}, report: &relayv1.IstioCAStatus{},
			asked: time.Second, askedRoot: "bb", now: 2 * time.Second, want: true},
		{name: "a cluster whose agent failed is not asked again within askAfterFailure", policies: []*trustPolicy{mesh}, report: failed,
			asked: time.Second, now: askAfterFailure},
		{name: "a cluster whose agent failed is asked again after askAfterFailure", policies: []*trustPolicy{mesh}, report: failed,
			asked: time.Second, now: askAfterFailure + time.Second, want: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newTrustState()
			for _, p := range tc.policies {
				s.setPolicy(p)
			}
			if tc.report != nil {
				s.report("c1", tc.report)
			}
			if tc.asked != 0 {
				root := tc.askedRoot
				if root == "" {
					root = "aa"
				}
				s.recordAsk("c1", root, t0.Add(tc.asked))
			}
			d := s.decide("c1", t0.Add(tc.now))
			if d.ask != tc.want {
				t.Errorf("decide: ask %v (reason %q), want %v", d.ask, d.reason, tc.want)
			}
		})
	}
}

func TestDecideTellsAnOverlappingPolicyOnce(t *testing.T) {
	t0 := time.Unix(1_000_000, 0)
	s := newTrustState()
	s.setPolicy(&trustPolicy{name: "old", created: t0})
	s.setPolicy(&trustPolicy{name: "new", created: t0.Add(time.Hour)})
	d := s.decide("c1", t0)
	if d.policy.name != "old" || strings.Join(d.overlapped, ",") != "new" {
		t.Fatalf("served by %s, told %v; want old, and new told", d.policy.name, d.overlapped)
	}
	if d := s.decide("c1", t0); len(d.overlapped) != 0 {
		t.Errorf("told %v again", d.overlapped)
	}
	s.setPolicy(&trustPolicy{name: "oldest", created: t0.Add(-time.Hour)})
	if d := s.decide("c1", t0); strings.Join(d.overlapped, ",") != "old,new" {
		t.Errorf("after an older policy came: told %v, want old and new, oldest first", d.overlapped)
	}
}
