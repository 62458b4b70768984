package server

import (
	"fmt"
	"slices"
	"time"

	meshv1alpha1 "github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
	"github.com/meshrelay/meshrelay/pkg/pki"
	"github.com/meshrelay/meshrelay/pkg/relaysecret"
)

// Federated trust. For each RootTrustPolicy in its namespace the server
// keeps the policy's root; for each connected cluster the policy applies
// to, it compares what the agent reports of istio-system/cacerts with the
// policy and, when the intermediate is missing, under another root or in
// its renewal window, asks the agent (pull stream) for a CSR. The agent
// makes the key inside its cluster and sends only the CSR (push stream);
// the server signs it with the root and returns the chain (pull stream).
// The key never reaches this cluster.
//
// The pieces: trustReconciler loads policies and roots into trustState and
// writes the policies' status through trustStatusWriter; trust, on the
// relay streams, keeps the agents' reports in trustState, asks for CSRs
// and answers them (signIntermediate) without calling the API server, and
// leaves what a policy's status must show in pendingResults for the
// reconciler, to which policyQueue hands the policy.

const (
	// minIntermediateTTL keeps renewal (a tenth of the lifetime before
	// expiry) longer than a round trip to the agent.
	minIntermediateTTL = time.Minute
)

// Reasons in relay_istio_intermediate_failures_total.
const (
	failRoot     = "root"
	failRequest  = "bad_request"
	failNoPolicy = "no_policy"
	failAgent    = "agent"
)

// trustPolicy is a loaded RootTrustPolicy whose root is usable.
type trustPolicy struct {
	name        string
	created     time.Time
	signer      *pki.Certified
	rootPEM     []byte
	rootSHA256  string
	ttl         time.Duration
	clusters    []string
	autoRestart bool
}

// newTrustPolicy returns p loaded with its root signer, whose intermediates
// live ttl.
func newTrustPolicy(p *meshv1alpha1.RootTrustPolicy, signer *pki.Certified, ttl time.Duration) *trustPolicy {
	root := signer.Root()
	return &trustPolicy{
		name: p.Name, created: p.CreationTimestamp.Time, signer: signer,
		rootPEM: pki.EncodeCertificates(root), rootSHA256: pki.Fingerprint(root),
		ttl: ttl, clusters: p.Spec.ApplyToClusters, autoRestart: p.Spec.Config.AutoRestartPods,
	}
}

// appliesTo reports whether p applies to cluster: every cluster when p
// names none.
func (p *trustPolicy) appliesTo(cluster string) bool {
	return len(p.clusters) == 0 || slices.Contains(p.clusters, cluster)
}

// policyTTL returns the lifetime of p's intermediates: its
// intermediateCertOptions.ttl, or relaysecret.IstioIntermediateLifetime when unset. A TTL
// under minIntermediateTTL is an error that says how to fix the spec.
func policyTTL(p *meshv1alpha1.RootTrustPolicy) (time.Duration, error) {
	ttl := relaysecret.IstioIntermediateLifetime
	if o := p.Spec.Config.IntermediateCertOptions.TTL; o != nil {
		ttl = o.Duration
	}
	if ttl < minIntermediateTTL {
		return 0, fmt.Errorf("spec.config.intermediateCertOptions.ttl %s is shorter than %s: set a longer one", ttl, minIntermediateTTL)
	}
	return ttl, nil
}
