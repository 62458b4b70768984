package server

import (
	"slices"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1alpha1 "github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
)

// resultKind is what happened to a cluster's intermediate. Each kind up
// to resultIssued writes every status field the kinds before it write, and
// more; resultHolds writes fields of its own.
type resultKind int

const (
	// resultFailed sets lastError and lastErrorTime.
	resultFailed resultKind = iota
	// resultOverlapped also clears issued: another policy serves the
	// cluster.
	resultOverlapped
	// resultIssued sets issued, serial, notAfter and issuedAt, and clears
	// the error.
	resultIssued
	// resultHolds sets root (and rootSince when the root is another) and
	// trustedRoots: what the agent reports its cacerts holds.
	resultHolds
)

// clusterResult is what happened to a cluster under a policy, for the
// cluster's entry in the policy's status.
type clusterResult struct {
	cluster string
	kind    resultKind
	at      time.Time
	// message is the error of a failed or overlapped result.
	message string
	// serial and notAfter describe an issued intermediate.
	serial   string
	notAfter time.Time
	// root and trusted are what cacerts holds: the root its intermediate
	// chains to, and the roots of root-cert.pem.
	root    string
	trusted []string
}

// apply writes r into c, the cluster's status entry.
func (r clusterResult) apply(c *meshv1alpha1.ClusterIntermediateStatus) {
	switch r.kind {
	case resultHolds:
		if c.Root != r.root || c.RootSince == nil {
			c.Root, c.RootSince = r.root, ptrTime(r.at)
		}
		c.TrustedRoots = slices.Clone(r.trusted)
	case resultIssued:
		c.Issued = true
		c.Serial = r.serial
		c.NotAfter = ptrTime(r.notAfter)
		c.IssuedAt = ptrTime(r.at)
		c.LastError, c.LastErrorTime = "", nil
	case resultOverlapped:
		c.Issued = false
		fallthrough
	default:
		c.LastError = r.message
		c.LastErrorTime = ptrTime(r.at)
	}
}

// ptrTime is at to the second, as status times are written.
func ptrTime(at time.Time) *metav1.Time {
	mt := metav1.NewTime(at.Truncate(time.Second))
	return &mt
}

// pendingResults are the cluster results the relay streams left for the
// reconciler to write, by policy, in the order they happened. A result
// replaces the pending results of its cluster that it overwrites entirely
// (those of its kind or a lesser one; a resultHolds only another), so a
// policy holds at most four per cluster. It is safe for concurrent use.
type pendingResults struct {
	mu     sync.Mutex
	byName map[string][]clusterResult
}

func newPendingResults() *pendingResults {
	return &pendingResults{byName: map[string][]clusterResult{}}
}

// add records r under policy. first says whether policy had no results
// pending, and so needs handing to the reconciler.
func (p *pendingResults) add(policy string, r clusterResult) (first bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	first = len(p.byName[policy]) == 0
	p.byName[policy] = appendResult(p.byName[policy], r)
	return first
}

func appendResult(rs []clusterResult, r clusterResult) []clusterResult {
	rs = slices.DeleteFunc(rs, func(o clusterResult) bool {
		if o.cluster != r.cluster || (o.kind == resultHolds) != (r.kind == resultHolds) || o.kind > r.kind {
			return false
		}
		if r.kind == resultHolds && o.root == r.root && o.at.Before(r.at) {
			r.at = o.at // the cluster has held this root since the earlier report
		}
		return true
	})
	return append(rs, r)
}

// take removes and returns policy's pending results, oldest first.
func (p *pendingResults) take(policy string) []clusterResult {
	p.mu.Lock()
	defer p.mu.Unlock()
	rs := p.byName[policy]
	delete(p.byName, policy)
	return rs
}

// putBack returns rs, taken from policy and not written, before any
// result added since.
func (p *pendingResults) putBack(policy string, rs []clusterResult) {
	p.mu.Lock()
	defer p.mu.Unlock()
	merged := slices.Clone(rs)
	for _, r := range p.byName[policy] {
		merged = appendResult(merged, r)
	}
	if len(merged) > 0 {
		p.byName[policy] = merged
	}
}

// drop forgets policy's pending results: the policy is gone.
func (p *pendingResults) drop(policy string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.byName, policy)
}

// policies returns the policies with results pending.
func (p *pendingResults) policies() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]string, 0, len(p.byName))
	for name := range p.byName {
		out = append(out, name)
	}
	return out
}
