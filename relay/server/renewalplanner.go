package server

import (
	"context"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
	"github.com/meshrelay/meshrelay/pkg/pki"
	relayv1 "github.com/meshrelay/meshrelay/relay/api/v1"
)

// renewalPlanner tells agents when to renew after the signing CA changed
// (an intermediate rotation, or a root rotation's Activate): every agent
// connected to this replica whose client certificate comes from another CA
// is sent a RenewAt, one slot of 1/renewalBudget seconds each, so that a
// fleet renews within the signing budget instead of all at once, and well
// before the CA it holds stops being admitted. Every replica plans for the
// agents whose pull streams it holds; the budget is per replica. An agent
// that renewed is not told again; one that did not renew within
// replanAfter of its slot (it missed the instruction) is told again.
type renewalPlanner struct {
	ns       string
	conns    *connections
	keys     *keyring
	clusters client.Reader
	budget   float64
	metrics  *rotationMetrics
	clock    clock.WithTicker
	log      logr.Logger
	// next is the next free slot.
	next time.Time
	// sent is, by cluster, the signing CA a RenewAt was sent for and its
	// slot.
	sent map[string]sentRenewal
	// bundleSent is, by cluster, when the trust bundle it has not
	// acknowledged was last sent (or first seen unacknowledged).
	bundleSent map[string]time.Time
}

type sentRenewal struct {
	ca   string
	slot time.Time
}

const (
	planEvery   = 2 * time.Second
	replanAfter = time.Minute
)

func (p *renewalPlanner) run(ctx context.Context) error {
	p.sent, p.bundleSent = map[string]sentRenewal{}, map[string]time.Time{}
	t := p.clock.NewTicker(planEvery)
	defer t.Stop()
	for {
		p.plan(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C():
		}
	}
}

// plan sends a RenewAt to each connected agent whose certificate the
// current signing CA did not issue.
func (p *renewalPlanner) plan(ctx context.Context) {
	iss := p.keys.issuer.Load()
	if iss == nil {
		return
	}
	current := pki.Fingerprint(iss.CA().Cert)
	// Only the certificates of the CA the current one replaced are
	// planned: those of a CA of clientIssuerSecret are renewed by their
	// own issuer, never by the agent.
	var previous string
	if ci := p.keys.clientIssuers.Load(); ci != nil && ci.previous != nil {
		previous = pki.Fingerprint(ci.previous)
	}
	bundle := ""
	if b := p.keys.rootPEM.Load(); b != nil {
		bundle = sha256Hex(*b)
	}
	now := p.clock.Now()
	if p.next.Before(now) {
		p.next = now
	}
	gap := time.Duration(float64(time.Second) / p.budget)
	seen := map[string]bool{}
	for _, cluster := range p.conns.pullClusters() {
		seen[cluster] = true
		p.resendBundle(cluster, p.acknowledged(ctx, cluster), bundle, now)
		if previous == "" {
			// No CA was replaced: nothing to plan, and no read of every
			// connected cluster every planEvery.
			delete(p.sent, cluster)
			continue
		}
		// Read, never changed, so the cache's object is not copied.
		var kc meshv1alpha1.KubernetesCluster
		if err := p.clusters.Get(ctx, types.NamespacedName{Namespace: p.ns, Name: cluster}, &kc, client.UnsafeDisableDeepCopy); err != nil {
			continue
		}
		issuer := ""
		if cert := liveCert(&kc, now); cert != nil {
			issuer = cert.IssuerSHA256
		}
		// The certificate the cluster's streams here presented counts
		// too: an agent that could not store its renewed certificate is
		// still on the previous CA's, and is told again.
		if c := p.conns.inUse(cluster); c != nil && c.notAfter.After(now) && c.issuerSHA256 == previous {
			issuer = previous
		}
		if issuer != previous {
			delete(p.sent, cluster)
			continue
		}
		if s, ok := p.sent[cluster]; ok && s.ca == current && now.Before(s.slot.Add(replanAfter)) {
			continue
		}
		slot := p.next
		p.next = p.next.Add(gap)
		in := &relayv1.Instruction{Instruction: &relayv1.Instruction_RenewAt{RenewAt: &relayv1.RenewAt{
			At:     slot.Unix(),
			Reason: "the relay signing CA changed: renew from the new one (" + current[:12] + ")",
		}}}
		if p.conns.send(cluster, in) == 0 {
			continue
		}
		p.sent[cluster] = sentRenewal{ca: current, slot: slot}
		p.metrics.directed.Inc()
		p.log.V(1).Info("told an agent when to renew", "cluster", cluster, "at", slot.UTC(), "issuer", issuer[:12])
	}
	for cluster := range p.sent {
		if !seen[cluster] {
			delete(p.sent, cluster)
		}
	}
	for cluster := range p.bundleSent {
		if !seen[cluster] {
			delete(p.bundleSent, cluster)
		}
	}
}

// acknowledged returns the trust bundle cluster's agent last
// acknowledged. The acknowledgement comes on the push stream, which the
// agent opens beside its pull stream on one connection: while this replica
// holds a push stream of cluster, its own record is the freshest and no
// KubernetesCluster is read. Otherwise (the streams on different
// replicas, say behind a proxy that spreads streams) it is what the
// cluster's status records from every replica.
func (p *renewalPlanner) acknowledged(ctx context.Context, cluster string) string {
	if v := p.conns.view(cluster); v.push > 0 {
		return v.trustBundle
	}
	var kc meshv1alpha1.KubernetesCluster
	if err := p.clusters.Get(ctx, types.NamespacedName{Namespace: p.ns, Name: cluster}, &kc, client.UnsafeDisableDeepCopy); err != nil {
		return ""
	}
	return kc.Status.TrustBundleSHA256
}

// bundleResend is how long an agent may take to acknowledge the trust
// bundle before it is sent again.
const bundleResend = 30 * time.Second

// resendBundle sends the trust bundle again to cluster when its agent,
// whose last acknowledgement is acked, has not acknowledged it
// bundleResend after it was last sent: an instruction that did not fit a
// slow stream's queue is dropped, and a rotation's Prepare and Retire wait
// for the acknowledgement.
func (p *renewalPlanner) resendBundle(cluster, acked, bundle string, now time.Time) {
	if bundle == "" || acked == bundle {
		delete(p.bundleSent, cluster)
		return
	}
	if at, ok := p.bundleSent[cluster]; !ok {
		// Sent when the stream opened or the bundle changed.
		p.bundleSent[cluster] = now
		return
	} else if now.Sub(at) < bundleResend {
		return
	}
	b := p.keys.rootPEM.Load()
	if b == nil {
		return
	}
	p.conns.send(cluster, &relayv1.Instruction{Instruction: &relayv1.Instruction_TrustBundle{TrustBundle: &relayv1.TrustBundle{CaCertificates: *b}}})
	p.bundleSent[cluster] = now
}
