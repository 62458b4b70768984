package server

import (
	"slices"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1alpha1 "github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
	relayv1 "github.com/meshrelay/meshrelay/relay/api/v1"
)

// holding is what a cluster's cacerts holds under a policy: the root its
// intermediate chains to and the roots of root-cert.pem.
type holding struct {
	policy, root string
	// trusted are the fingerprints of root-cert.pem, joined by commas.
	trusted string
}

// holdingOf returns what rep says cacerts holds under its policy; false
// when it holds no intermediate under one, or rep reports a failure (whose
// policy is the one that failed, not the one cacerts holds).
func holdingOf(rep *relayv1.IstioCAStatus) (holding, bool) {
	if rep.GetPolicy() == "" || rep.GetNotAfter() == 0 || rep.GetError() != "" {
		return holding{}, false
	}
	return holding{policy: rep.GetPolicy(), root: rep.GetRootSha256(), trusted: strings.Join(rep.GetRootCertSha256(), ",")}, true
}

// holdsResult is what rep, a report of cluster's agent at at, leaves for
// its policy's status.
func holdsResult(cluster string, rep *relayv1.IstioCAStatus, at time.Time) clusterResult {
	return clusterResult{cluster: cluster, kind: resultHolds, at: at, root: rep.GetRootSha256(), trusted: slices.Clone(rep.GetRootCertSha256())}
}

// boundRootCerts returns rep without its root-cert.pem fingerprints when
// they are more than maxTrustedRoots or not all SHA-256 in lowercase hex:
// an agent's list becomes status, and is compared, only when it is one an
// agent can send.
func boundRootCerts(rep *relayv1.IstioCAStatus) *relayv1.IstioCAStatus {
	certs := rep.GetRootCertSha256()
	ok := len(certs) <= maxTrustedRoots
	for _, c := range certs {
		ok = ok && isHexSHA256(c)
	}
	if ok {
		return rep
	}
	return &relayv1.IstioCAStatus{Policy: rep.GetPolicy(), NotBefore: rep.GetNotBefore(), NotAfter: rep.GetNotAfter(), RootSha256: rep.GetRootSha256(), Error: rep.GetError()}
}

// dropDecision says whether to ask cluster to drop roots from root-cert.pem
// at now, under the policy that serves it: when its intermediate chains to
// the policy's root and root-cert.pem holds a root the policy no longer
// trusts. It is asked at most once per askAgain for the same roots to keep
// (askAfterFailure after its agent reported a failure). Agents that do not
// report root-cert.pem's roots are never asked. The ask is recorded.
func (s *trustState) dropDecision(cluster string, now time.Time) (*trustPolicy, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, _ := s.policyFor(cluster)
	rep := s.reports[cluster]
	if p == nil || rep == nil || rep.GetPolicy() != p.name || rep.GetRootSha256() != p.rootSHA256 {
		return nil, false
	}
	if !slices.ContainsFunc(rep.GetRootCertSha256(), func(sha string) bool { return !p.trusts(sha) }) {
		return nil, false
	}
	wait := askAgain
	if rep.GetError() != "" {
		wait = askAfterFailure
	}
	keep := strings.Join(append([]string{p.rootSHA256}, p.previous...), ",")
	if last, ok := s.dropAsked[cluster]; ok && last.rootSHA256 == keep && now.Sub(last.at) < wait {
		return nil, false
	}
	s.dropAsked[cluster] = csrRequest{at: now, rootSHA256: keep}
	return p, true
}

// dropRoots asks cluster's agents to rewrite root-cert.pem without the
// roots the policy that serves it no longer trusts, when dropDecision says
// to: the end of a root change's overlap. The agent keeps its intermediate.
func (t *trust) dropRoots(cluster string, now time.Time) {
	p, ok := t.State.dropDecision(cluster, now)
	if !ok {
		return
	}
	in := &relayv1.Instruction{Instruction: &relayv1.Instruction_IntermediateIssued{IntermediateIssued: &relayv1.IntermediateIssued{
		Policy: p.name, RootCertificate: p.rootPEM, PreviousRootSha256: p.previous, AutoRestartPods: p.autoRestart,
	}}}
	if t.Conns.send(cluster, in) > 0 {
		t.Log.Info("asked the cluster to drop the roots its RootTrustPolicy no longer trusts from root-cert.pem", "cluster", cluster, "policy", p.name, "root", p.rootSHA256, "keeping", p.previous)
	}
}

// policy returns the loaded policy name, or nil.
func (s *trustState) policy(name string) *trustPolicy {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.policies[name]
}

// wouldServe reports whether p, loaded in place of the policy of its name,
// would serve cluster.
func (s *trustState) wouldServe(p *trustPolicy, cluster string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !p.appliesTo(cluster) {
		return false
	}
	for _, o := range s.policies {
		if o.name != p.name && o.appliesTo(cluster) && o.older(p) {
			return false
		}
	}
	return true
}

// carriedPrevious returns the roots p's root-cert.pem keeps when its
// status cannot say: those of old, the policy as loaded before, and old's
// root when p's is another.
func carriedPrevious(old, p *trustPolicy) []string {
	if old == nil {
		return nil
	}
	prev := slices.Clone(old.previous)
	if old.rootSHA256 != p.rootSHA256 {
		prev = append([]string{old.rootSHA256}, prev...)
	}
	return slices.DeleteFunc(prev, func(sha string) bool { return sha == p.rootSHA256 })
}

// overlap is what advanceOverlap made of a policy's status.
type overlap struct {
	// previous are the fingerprints of the replaced roots root-cert.pem
	// keeps.
	previous []string
	// changed says the root changed since the status was written.
	changed bool
	// retireAt is when previous leave, once no cluster is pending; zero
	// otherwise.
	retireAt time.Time
	// retired are the roots that left now.
	retired []string
	// pending are the clusters waited for.
	pending []string
}

// advanceOverlap moves st, a policy's status, to the policy's root root at
// now. A new root heads status.trustedRoots, before the roots it replaced
// (at most maxTrustedRoots in all), and starts status.rootChange. While it
// lasts, the clusters inScope that held an intermediate of the policy and
// whose intermediate does not chain to root, as their agents reported, are
// pending. Once none is, the replaced roots leave workloadTTL after the
// last cluster moved to root (or after the change, when later): by then
// the workload certificates issued under the old intermediates have
// expired. Each cluster's entry must have its results applied. It is a
// pure function of its arguments, so every replica makes the same of the
// same status.
func advanceOverlap(st *meshv1alpha1.RootTrustPolicyStatus, root *meshv1alpha1.RootStatus, inScope func(cluster string) bool, workloadTTL time.Duration, now time.Time) overlap {
	var o overlap
	trusted := slices.Clone(st.TrustedRoots)
	if len(trusted) == 0 && st.Root != nil {
		// Written before the status kept trusted roots: it trusted its root.
		trusted = []meshv1alpha1.TrustedRoot{{SHA256: st.Root.SHA256, NotAfter: st.Root.NotAfter}}
	}
	cur := meshv1alpha1.TrustedRoot{SHA256: root.SHA256, NotAfter: root.NotAfter}
	if len(trusted) == 0 || trusted[0].SHA256 != cur.SHA256 {
		o.changed = len(trusted) > 0
		trusted = slices.DeleteFunc(trusted, func(r meshv1alpha1.TrustedRoot) bool { return r.SHA256 == cur.SHA256 })
		trusted = append([]meshv1alpha1.TrustedRoot{cur}, trusted...)
		if o.changed {
			st.RootChange = &meshv1alpha1.RootChangeStatus{Since: metav1.NewTime(now.Truncate(time.Second))}
		}
	}
	trusted[0] = cur
	if len(trusted) > maxTrustedRoots {
		trusted = trusted[:maxTrustedRoots]
	}
	if len(trusted) == 1 {
		st.TrustedRoots, st.RootChange = trusted, nil
		return o
	}
	if st.RootChange == nil {
		st.RootChange = &meshv1alpha1.RootChangeStatus{Since: metav1.NewTime(now.Truncate(time.Second))}
	}
	lastMove := st.RootChange.Since.Time
	for _, c := range st.Clusters {
		if !inScope(c.Name) || (c.Serial == "" && c.Root == "") {
			continue // no intermediate of the policy, or not the policy's to wait for
		}
		if c.Root != cur.SHA256 {
			o.pending = append(o.pending, c.Name)
		} else if c.RootSince != nil && c.RootSince.After(lastMove) {
			lastMove = c.RootSince.Time
		}
	}
	st.RootChange.Pending, st.RootChange.PendingCount, st.RootChange.RetireAfter = o.pending, len(o.pending), nil
	for _, r := range trusted[1:] {
		o.previous = append(o.previous, r.SHA256)
	}
	if len(o.pending) == 0 {
		o.retireAt = lastMove.Add(workloadTTL)
		st.RootChange.RetireAfter = ptrTime(o.retireAt)
		if !now.Before(o.retireAt) {
			o.retired, o.previous, o.retireAt = o.previous, nil, time.Time{}
			trusted, st.RootChange = trusted[:1], nil
		}
	}
	st.TrustedRoots = trusted
	return o
}
