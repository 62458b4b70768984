package server

import (
	"fmt"
	"time"

	"github.com/meshrelay/meshrelay/pkg/pki"
	relayv1 "github.com/meshrelay/meshrelay/relay/api/v1"
)

// intermediateGraceRatio renews an Istio intermediate when this fraction
// of its lifetime is left.
const intermediateGraceRatio = 0.1

// askDecision is what the trust state says of one cluster at one time.
type askDecision struct {
	// policy serves the cluster; nil when none does.
	policy *trustPolicy
	// reason is why the cluster needs a new intermediate; "" when it does
	// not, or its agent has not reported yet.
	reason string
	// ask says whether to ask the cluster for a CSR now.
	ask bool
	// overlapped are the other policies that apply to the cluster and are
	// now told, for the first time, that policy serves it.
	overlapped []string
}

// decide says whether to ask cluster for a CSR at now: when its
// intermediate needs renewing (renewalReason) and it was not asked within
// askAgain (askAfterFailure after its agent reported a failure), or was
// asked under another root. A cluster whose agent has not reported is not
// asked: it reports before opening its pull stream. decide records the
// overlapped policies as told; recordAsk records the request once it is sent.
func (s *trustState) decide(cluster string, now time.Time) askDecision {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, others := s.policyFor(cluster)
	d := askDecision{policy: p}
	for _, o := range others {
		if k := [2]string{cluster, o}; s.overlaps[k] != p.name {
			s.overlaps[k] = p.name
			d.overlapped = append(d.overlapped, o)
		}
	}
	rep := s.reports[cluster]
	if p == nil || rep == nil {
		return d
	}
	d.reason = renewalReason(rep, p, now)
	wait := askAgain
	if rep.GetError() != "" {
		wait = askAfterFailure // the agent could not install the last one
	}
	last := s.requested[cluster]
	d.ask = d.reason != "" && (now.Sub(last.at) >= wait || last.rootSHA256 != p.rootSHA256)
	return d
}

// recordAsk records that cluster was asked for a CSR at now under the root
// rootSHA256.
func (s *trustState) recordAsk(cluster, rootSHA256 string, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requested[cluster] = csrRequest{at: now, rootSHA256: rootSHA256}
}

// renewalReason says why cluster needs a new intermediate under p, given
// what its agent reported; "" means it does not.
func renewalReason(rep *relayv1.IstioCAStatus, p *trustPolicy, now time.Time) string {
	switch {
	case rep.GetNotAfter() == 0:
		return "no intermediate in cacerts"
	case rep.GetPolicy() != p.name:
		return fmt.Sprintf("cacerts was not issued under this policy (it says %q)", rep.GetPolicy())
	case rep.GetRootSha256() != p.rootSHA256:
		return "the policy's root changed"
	}
	renewAt, err := pki.RenewAt(time.Unix(rep.GetNotBefore(), 0), time.Unix(rep.GetNotAfter(), 0), intermediateGraceRatio, 0)
	switch {
	case err != nil:
		return fmt.Sprintf("the reported intermediate is unusable: %v", err)
	case !now.Before(renewAt):
		return "the intermediate is in its renewal window"
	}
	return ""
}
