package server

import (
	"strings"
	"testing"
	"time"
)

func TestPolicyForPicksTheOldestThatApplies(t *testing.T) {
	t0 := time.Unix(1_000_000, 0)
	tr := newTrustState()
	tr.policies = map[string]*trustPolicy{
		"newer":    {name: "newer", created: t0.Add(time.Hour)},
		"b-oldest": {name: "b-oldest", created: t0},
		"a-oldest": {name: "a-oldest", created: t0},
		"only-c3":  {name: "only-c3", created: t0.Add(-time.Hour), clusters: []string{"c3"}},
	}
	p, others := tr.policyFor("c1")
	if p.name != "a-oldest" || strings.Join(others, ",") != "b-oldest,newer" {
		t.Errorf("c1: served by %s, others %v", p.name, others)
	}
	if p, _ := tr.policyFor("c3"); p.name != "only-c3" {
		t.Errorf("c3: served by %s, want the policy naming it", p.name)
	}
	tr.policies = map[string]*trustPolicy{"only-c3": tr.policies["only-c3"]}
	if p, _ := tr.policyFor("c1"); p != nil {
		t.Errorf("c1: served by %s, which does not apply to it", p.name)
	}
}
