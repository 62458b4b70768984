package server

import (
	"sort"
	"sync"
	"time"

	relayv1 "github.com/meshrelay/meshrelay/relay/api/v1"
)

const (
	// askAgain is how long the server waits for a CSR before asking again.
	askAgain = 30 * time.Second
	// askAfterFailure is that wait after the agent reported a failure.
	askAfterFailure = 5 * time.Minute
)

// csrRequest is when a cluster was last asked for a CSR, and under which
// root.
type csrRequest struct {
	at         time.Time
	rootSHA256 string
}

// trustState is what federated trust knows in memory: the loaded policies,
// the agents' last reports of their cacerts, which cluster was asked for a
// CSR when and under which root, and which policies were told that another
// serves a cluster. It does no I/O and reads no clock: callers pass the
// time. It is safe for concurrent use.
type trustState struct {
	mu       sync.Mutex
	policies map[string]*trustPolicy
	// reports are the agents' last reports of their cacerts, by cluster.
	reports map[string]*relayv1.IstioCAStatus
	// requested is each cluster's last request for a CSR: a new root is
	// asked for at once.
	requested map[string]csrRequest
	// overlaps are the policies told that another serves a cluster, by
	// cluster and policy, with the one that serves it.
	overlaps map[[2]string]string
	// awaited is the policy each cluster was asked for a CSR under and has
	// not answered yet: only such a CSR is signed, once.
	awaited map[string]string
	// holds is what each cluster's cacerts held under a policy when last
	// left for the policy's status.
	holds map[string]holding
	// dropAsked is when each cluster was last asked to drop replaced roots
	// from root-cert.pem, and which roots it was to keep.
	dropAsked map[string]csrRequest
}

func newTrustState() *trustState {
	return &trustState{
		policies:  map[string]*trustPolicy{},
		reports:   map[string]*relayv1.IstioCAStatus{},
		requested: map[string]csrRequest{},
		overlaps:  map[[2]string]string{},
		awaited:   map[string]string{},
		holds:     map[string]holding{},
		dropAsked: map[string]csrRequest{},
	}
}

// awaitCSR records that cluster is being asked for a CSR under policy.
func (s *trustState) awaitCSR(cluster, policy string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.awaited[cluster] = policy
}

// takeCSR reports whether cluster was asked for a CSR under policy and has
// not answered yet, and forgets the ask: one ask, one signature. An agent
// cannot make the server sign by sending CSRs it was not asked for.
func (s *trustState) takeCSR(cluster, policy string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p, ok := s.awaited[cluster]; !ok || p != policy {
		return false
	}
	delete(s.awaited, cluster)
	return true
}

// setPolicy loads p in place of the policy of its name, which it returns
// (nil when there was none).
func (s *trustState) setPolicy(p *trustPolicy) (old *trustPolicy) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old = s.policies[p.name]
	s.policies[p.name] = p
	return old
}

// forgetPolicy unloads the policy name: nothing is issued under it any
// more. It reports whether the policy was loaded.
func (s *trustState) forgetPolicy(name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, had := s.policies[name]
	delete(s.policies, name)
	for c, h := range s.holds {
		if h.policy == name {
			delete(s.holds, c) // a policy made again under the name learns them again
		}
	}
	return had
}

// serving returns the policy that serves cluster, or nil.
func (s *trustState) serving(cluster string) *trustPolicy {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, _ := s.policyFor(cluster)
	return p
}

// applies reports whether the loaded policy name applies to cluster. An
// agent's policy names are checked with it before they are kept or become
// labels: what an agent may name is bounded by the policies that exist.
func (s *trustState) applies(cluster, name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.policies[name]
	return p != nil && p.appliesTo(cluster)
}

// policyFor returns the policy that serves cluster: the oldest of those that
// apply to it (by creation, then name), with the names of the others.
// s.mu must be held.
func (s *trustState) policyFor(cluster string) (*trustPolicy, []string) {
	var apply []*trustPolicy
	for _, p := range s.policies {
		if p.appliesTo(cluster) {
			apply = append(apply, p)
		}
	}
	if len(apply) == 0 {
		return nil, nil
	}
	sort.Slice(apply, func(i, j int) bool { return apply[i].older(apply[j]) })
	var others []string
	for _, p := range apply[1:] {
		others = append(others, p.name)
	}
	return apply[0], others
}

// report records what cluster's agent found in cacerts. newFailure says
// whether it reports a failure other than the one it reported last; moved
// whether cacerts holds an intermediate under its policy that is not what
// the last such report said it held (another root, other roots in
// root-cert.pem), for the policy's status.
func (s *trustState) report(cluster string, rep *relayv1.IstioCAStatus) (newFailure, moved bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	newFailure = rep.GetError() != "" && s.reports[cluster].GetError() != rep.GetError()
	s.reports[cluster] = rep
	if h, ok := holdingOf(rep); ok && s.holds[cluster] != h {
		s.holds[cluster] = h
		moved = true
	}
	return newFailure, moved
}

// reportedClusters returns the clusters whose agent has reported, or none
// while no policy is loaded.
func (s *trustState) reportedClusters() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.policies) == 0 {
		return nil
	}
	clusters := make([]string, 0, len(s.reports))
	for c := range s.reports {
		clusters = append(clusters, c)
	}
	return clusters
}
