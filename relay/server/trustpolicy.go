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
// When the policy's root changes, the clusters keep the roots it replaced
// in root-cert.pem beside the new one (advanceOverlap): every intermediate
// issued meanwhile carries their fingerprints, and the agent keeps those
// its root-cert.pem holds. Once every cluster holds an intermediate under
// the new root and workloadCertTTL has passed, the replaced roots leave
// the policy's status and the server asks each cluster still holding one
// to rewrite root-cert.pem without it (trust.dropRoots).
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
	// defaultWorkloadCertTTL is istiod's default workload certificate
	// lifetime, for a policy that sets no workloadCertTTL.
	defaultWorkloadCertTTL = 24 * time.Hour
	// maxTrustedRoots bounds the roots root-cert.pem holds and an agent
	// reports (IstioCAStatus.root_cert_sha256).
	maxTrustedRoots = 8
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
	// previous are the fingerprints of the roots rootSHA256 replaced that
	// root-cert.pem keeps during the overlap of a root change.
	previous []string
	// workloadTTL is how long istiod's workload certificates live.
	workloadTTL time.Duration
}

// newTrustPolicy returns p loaded with its root signer, whose intermediates
// live ttl and whose workload certificates workloadTTL.
func newTrustPolicy(p *meshv1alpha1.RootTrustPolicy, signer *pki.Certified, ttl, workloadTTL time.Duration) *trustPolicy {
	root := signer.Root()
	return &trustPolicy{
		name: p.Name, created: p.CreationTimestamp.Time, signer: signer,
		rootPEM: pki.EncodeCertificates(root), rootSHA256: pki.Fingerprint(root),
		ttl: ttl, clusters: p.Spec.ApplyToClusters, autoRestart: p.Spec.Config.AutoRestartPods,
		workloadTTL: workloadTTL,
	}
}

// withPrevious returns a copy of p whose root-cert.pem keeps previous.
func (p *trustPolicy) withPrevious(previous []string) *trustPolicy {
	c := *p
	c.previous = slices.Clone(previous)
	return &c
}

// trusts reports whether root-cert.pem may hold the root sha256 under p:
// p's root, or a root it replaced during the overlap.
func (p *trustPolicy) trusts(sha256 string) bool {
	return sha256 == p.rootSHA256 || slices.Contains(p.previous, sha256)
}

// older reports whether p serves a cluster before o when both apply to
// it: the older by creation, then by name.
func (p *trustPolicy) older(o *trustPolicy) bool {
	if !p.created.Equal(o.created) {
		return p.created.Before(o.created)
	}
	return p.name < o.name
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

// policyWorkloadTTL returns how long istiod's workload certificates live
// in p's clusters: its workloadCertTTL, or defaultWorkloadCertTTL when
// unset. A negative one is an error that says how to fix the spec.
func policyWorkloadTTL(p *meshv1alpha1.RootTrustPolicy) (time.Duration, error) {
	o := p.Spec.Config.WorkloadCertTTL
	if o == nil {
		return defaultWorkloadCertTTL, nil
	}
	if o.Duration < 0 {
		return 0, fmt.Errorf("spec.config.workloadCertTTL %s is negative: set istiod's workload certificate lifetime (its DEFAULT_WORKLOAD_CERT_TTL, 24h unless changed)", o.Duration)
	}
	return o.Duration, nil
}
