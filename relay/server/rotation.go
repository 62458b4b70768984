package server

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/pkg/pki"
	"github.com/meshrelay/meshrelay/pkg/relaysecret"
)

// Event reasons on the RelayTrust.
const (
	EventRotationStarted     = "RotationStarted"
	EventPhaseChanged        = "PhaseChanged"
	EventRotated             = "Rotated"
	EventRotationBlocked     = "RotationBlocked"
	EventCertificateReplaced = "CertificateReplaced"
	EventRotationFailed      = "RotationFailed"
	EventRootSecretMissing   = "RootSecretMissing"
)

// Conditions of the RelayTrust.
const (
	ConditionReady       = "Ready"
	ConditionProgressing = "Progressing"
)

// rotation renews the certificates relay-server generated (the server
// certificate, the signing intermediate and the root) at their renewal
// points or when RelayTrust asks, and replaces the root in phases. It runs
// on the leader only. All its state is in Kubernetes: the secrets say
// which phase a root rotation is in (derivePhase) and RelayTrust's status
// records the rest, so a leader that starts at any moment resumes.
// Each step is one secret update, made against the version read, so that
// a step is never applied twice.
type rotation struct {
	cfg *config.Server
	// client writes the secrets and the RelayTrust; secrets reads the
	// relay secrets (the keyring's cache); clusters reads
	// KubernetesClusters and the RelayTrust (the manager's cache).
	client   client.Client
	secrets  client.Reader
	clusters client.Reader
	rec      events.EventRecorder
	metrics  *rotationMetrics
	clock    clock.WithTicker
	log      logr.Logger
	// publish, when set, publishes the trust bundle as the management
	// cluster's ClusterTrustBundle.
	publish func(ctx context.Context, bundle []byte) error
	// published is the bundle last published.
	published string
	// noted remembers the warnings recorded as Events, so that each is
	// recorded once until it changes.
	noted map[string]string
	// lastPending is when Activate last saw a cluster whose newest
	// certificate chains to the old root (zero before it looked).
	lastPending time.Time
	// writes counts the secret updates made.
	writes int
}

// handover is how long Activate waits after the last cluster renewed onto
// the new root before the old root leaves: an agent moves its streams to
// a connection made with its new certificate within a second or two of
// renewing, and streams still held on the old one would be closed when
// their root leaves.
const handover = 10 * time.Second

// interval is how often the rotation looks: a sixtieth of the shortest
// lifetime it manages, between a second and ten.
func (r *rotation) interval() time.Duration {
	shortest := min(r.cfg.ServerCertificateTTL.Duration, r.cfg.SigningCertificateTTL.Duration, r.cfg.RootCertificateTTL.Duration)
	return min(max(shortest/60, time.Second), 10*time.Second)
}

// Start runs the rotation until ctx ends (manager.Runnable; the leader
// only).
func (r *rotation) Start(ctx context.Context) error {
	t := r.clock.NewTicker(r.interval())
	defer t.Stop()
	for {
		if err := r.tick(ctx); err != nil && ctx.Err() == nil {
			r.log.Error(err, "certificate rotation step failed; retrying")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C():
		}
	}
}

// secretKeys are the root, signing and server secrets.
func (r *rotation) secretKeys() (root, signing, server types.NamespacedName) {
	ns := r.cfg.Namespace
	return r.cfg.RootTLSSecret.NamespacedName(ns), r.cfg.SigningTLSSecret.NamespacedName(ns), r.cfg.TLSSecret.NamespacedName(ns)
}

// read returns the three secrets (nil when absent).
func (r *rotation) read(ctx context.Context) (*caState, error) {
	keys := make([]types.NamespacedName, 3)
	keys[0], keys[1], keys[2] = r.secretKeys()
	got := make([]*corev1.Secret, 3)
	for i, k := range keys {
		var s corev1.Secret
		err := r.secrets.Get(ctx, k, &s)
		switch {
		case apierrors.IsNotFound(err):
		case err != nil:
			return nil, fmt.Errorf("failed to read secret %s: %w", k, err)
		default:
			got[i] = &s
		}
	}
	return decodeCA(got[0], got[1], got[2]), nil
}

// relayTrust returns the RelayTrust, creating it when absent.
func (r *rotation) relayTrust(ctx context.Context) (*meshv1alpha1.RelayTrust, error) {
	key := types.NamespacedName{Namespace: r.cfg.Namespace, Name: meshv1alpha1.RelayTrustName}
	var rt meshv1alpha1.RelayTrust
	err := r.clusters.Get(ctx, key, &rt)
	if apierrors.IsNotFound(err) {
		rt = meshv1alpha1.RelayTrust{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name}}
		if err := r.client.Create(ctx, &rt); err != nil && !apierrors.IsAlreadyExists(err) {
			return nil, fmt.Errorf("failed to create RelayTrust %s: %w", key, err)
		}
		err = r.client.Get(ctx, key, &rt)
	}
	if err != nil {
		return nil, fmt.Errorf("failed to get RelayTrust %s: %w", key, err)
	}
	return &rt, nil
}

// step is what one tick found and did, for the status.
type step struct {
	now     time.Time
	st      *caState
	phase   meshv1alpha1.RotationPhase
	since   time.Time
	pending []meshv1alpha1.PendingCluster
	count   int32
	// outgoing is the root leaving (Activate, Retire).
	outgoing *x509.Certificate
	problems []string
	// stale is set when the tick changed a secret after reading it.
	stale bool
}

// tick looks once and takes at most one step of each rotation.
func (r *rotation) tick(ctx context.Context) error {
	rt, err := r.relayTrust(ctx)
	if err != nil {
		return err
	}
	st, err := r.read(ctx)
	if err != nil {
		return err
	}
	// The tick only reads the clusters (pendingClusters copies names out),
	// so the cache's objects are not copied: with thousands of clusters the
	// copy was most of a tick's cost.
	var kcs meshv1alpha1.KubernetesClusterList
	if err := r.clusters.List(ctx, &kcs, client.InNamespace(r.cfg.Namespace), client.UnsafeDisableDeepCopy); err != nil {
		return fmt.Errorf("failed to list KubernetesClusters: %w", err)
	}
	s := &step{now: r.clock.Now(), st: st}
	status := rt.Status.DeepCopy()
	s.phase = derivePhase(st, status.Phase)
	s.since = s.now
	if status.Phase == s.phase && status.PhaseSince != nil {
		s.since = status.PhaseSince.Time
	}
	var errs []error
	wrote := r.writes
	if err := r.act(ctx, rt, status, s, kcs.Items); err != nil {
		errs = append(errs, err)
	}
	// The secrets read before a step no longer say what they hold: the
	// certificates in status are described again at the next tick.
	s.stale = r.writes != wrote
	if err := r.publishBundle(ctx, s.st); err != nil {
		errs = append(errs, err)
	}
	if err := r.writeStatus(ctx, rt, status, s, kcs.Items); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// act takes the steps due: replacing what expired, then the root
// rotation's next phase, then the intermediate and the server certificate.
// A step that changed a secret ends the tick: the next tick reads what it
// wrote.
func (r *rotation) act(ctx context.Context, rt *meshv1alpha1.RelayTrust, status *meshv1alpha1.RelayTrustStatus, s *step, kcs []meshv1alpha1.KubernetesCluster) error {
	st := s.st
	if r.cfg.DisableCa || r.cfg.DisableCaCertGeneration || r.cfg.Insecure {
		return nil
	}
	if st.root == nil {
		if st.signing != nil || st.server != nil {
			msg := fmt.Sprintf("secret %s is missing while %s and %s remain: relay-server does not make a new root, which no agent trusts; "+
				"restore the root secret from a backup (relayctl restore), or delete all three secrets to start over with a new root, after which every cluster must be registered again (relayctl register)",
				r.cfg.RootTLSSecret.NamespacedName(r.cfg.Namespace), r.cfg.SigningTLSSecret.NamespacedName(r.cfg.Namespace), r.cfg.TLSSecret.NamespacedName(r.cfg.Namespace))
			s.problems = append(s.problems, msg)
			r.noteOnce(rt, "root-missing", "missing", corev1.EventTypeWarning, EventRootSecretMissing, msg)
		}
		return nil
	}
	r.forget("root-missing")
	if st.signer == nil || !isGenerated(st.root) {
		// A root relay-server did not make, or without its key: only
		// reported.
		return nil
	}
	if done, err := r.replaceExpired(ctx, rt, s); done || err != nil {
		return err
	}
	if done, err := r.rootStep(ctx, rt, status, s, kcs); done || err != nil {
		return err
	}
	if done, err := r.intermediateStep(ctx, rt, status, s, kcs); done || err != nil {
		return err
	}
	_, err := r.serverStep(ctx, rt, status, s)
	return err
}

// replaceExpired replaces a generated certificate that has expired, at
// once and whatever the phase: an expired root with a new root,
// intermediate and server certificate (agents must then be registered
// again: nothing they trust verifies the new root); an expired
// intermediate or server certificate with one under the signing root.
func (r *rotation) replaceExpired(ctx context.Context, rt *meshv1alpha1.RelayTrust, s *step) (bool, error) {
	st, now := s.st, s.now
	if !now.Before(st.signer.Cert.NotAfter) {
		root, err := r.newRoot(now)
		if err != nil {
			return true, err
		}
		// The expired root leaves the bundle, and with it the chain of
		// every certificate under it: that is the point.
		if err := r.updateSecret(ctx, st.root, rootData(root, nil), map[string]string{
			meshv1alpha1.AllowChainBreakAnnotation:  "true",
			meshv1alpha1.AllowRootRemovalAnnotation: "true",
		}); err != nil {
			return true, r.failed(rt, certRoot, err)
		}
		r.replaced(rt, certRoot, st.signer.Cert, root.Cert, "every cluster must be registered again (relayctl register), since agents trust only the expired root")
		return true, nil
	}
	if st.signing != nil && isGenerated(st.signing) && (st.inter == nil || !now.Before(st.inter.Cert.NotAfter)) {
		inter, err := r.newIntermediate(st.signer, now)
		if err != nil {
			return true, r.failed(rt, certIntermediate, err)
		}
		if err := r.updateSecret(ctx, st.signing, signingData(inter, nil), nil); err != nil {
			return true, r.failed(rt, certIntermediate, err)
		}
		r.replaced(rt, certIntermediate, certOf(st.inter), inter.Cert, "")
		return true, nil
	}
	if st.server != nil && isGenerated(st.server) && (st.serving == nil || !now.Before(st.serving.Cert.NotAfter)) {
		srv, err := r.newServer(st.signer, now)
		if err != nil {
			return true, r.failed(rt, certServer, err)
		}
		if err := r.updateSecret(ctx, st.server, servingData(srv), nil); err != nil {
			return true, r.failed(rt, certServer, err)
		}
		r.replaced(rt, certServer, certOf(st.serving), srv.Cert, "")
		return true, nil
	}
	return false, r.clearAnnotations(ctx, st.root)
}

// clearAnnotations removes the override annotations an expired root's
// replacement set, once nothing needs them.
func (r *rotation) clearAnnotations(ctx context.Context, root *corev1.Secret) error {
	_, a := root.Annotations[meshv1alpha1.AllowChainBreakAnnotation]
	_, b := root.Annotations[meshv1alpha1.AllowRootRemovalAnnotation]
	if !a && !b || root.Labels[meshv1alpha1.GeneratedLabel] != "true" {
		return nil
	}
	return r.updateSecret(ctx, root, root.Data, map[string]string{meshv1alpha1.AllowChainBreakAnnotation: "", meshv1alpha1.AllowRootRemovalAnnotation: ""})
}

// rootStep moves a root rotation on by one phase when what the phase waits
// for is done, or starts one when the root is due or a rotation was asked
// for.
func (r *rotation) rootStep(ctx context.Context, rt *meshv1alpha1.RelayTrust, status *meshv1alpha1.RelayTrustStatus, s *step, kcs []meshv1alpha1.KubernetesCluster) (bool, error) {
	st, now := s.st, s.now
	req := rt.Spec.RotateRoot
	allGenerated := isGenerated(st.signing) && isGenerated(st.server) && st.inter != nil && st.serving != nil
	if requested(req, status.ObservedRequests.Root) && s.phase != meshv1alpha1.PhaseStable {
		// Asked for while one is under way: that one serves it (and
		// takes its --now).
		status.ObservedRequests.Root = req.RequestedAt.DeepCopy()
	}
	if s.phase != meshv1alpha1.PhaseStable && status.RotationStartedAt == nil {
		// A rotation found under way (its status was lost).
		status.RotationStartedAt = &metav1.Time{Time: s.since}
	}
	// --now applies to the rotation it started or that was under way when
	// it was asked for, never to a later one.
	skipOverlap := req != nil && req.Now && status.ObservedRequests.Root != nil && status.ObservedRequests.Root.Equal(&req.RequestedAt) &&
		status.RotationStartedAt != nil && !req.RequestedAt.Time.Before(status.RotationStartedAt.Add(-time.Minute))
	overlapDone := skipOverlap || now.Sub(s.since) >= r.cfg.RootRotationOverlap.Duration
	bundleSHA := bundleSHA256(st.bundle)
	switch s.phase {
	case meshv1alpha1.PhaseStable:
		due := !now.Before(renewAt(st.signer.Cert, r.cfg.RootRenewalRatio))
		asked := requested(req, status.ObservedRequests.Root)
		if !due && !asked {
			return false, nil
		}
		if !allGenerated {
			if asked {
				status.ObservedRequests.Root = req.RequestedAt.DeepCopy()
				s.problems = append(s.problems, "a root rotation was asked for, but the signing and server secrets were not generated by relay-server, which cannot move them to a new root: replace them yourself")
			}
			return false, nil
		}
		root, err := r.newRoot(now)
		if err != nil {
			return true, r.failed(rt, certRoot, err)
		}
		// Prepare: the new root signs from now on and joins the bundle;
		// the intermediate and the server certificate stay under the old
		// root until every agent has the new one.
		if err := r.updateSecret(ctx, st.root, rootData(root, st.bundle), nil); err != nil {
			return true, r.failed(rt, certRoot, err)
		}
		if asked {
			status.ObservedRequests.Root = req.RequestedAt.DeepCopy()
		}
		s.phase, s.since = meshv1alpha1.PhasePrepare, now
		status.RotationStartedAt = &metav1.Time{Time: now}
		why := "the root reached its renewal point"
		if asked {
			why = "asked for by RelayTrust spec.rotateRoot"
		}
		r.event(rt, corev1.EventTypeNormal, EventRotationStarted, "Rotate", "root rotation started (%s): new root %s joins the trust bundle beside %s; phase Prepare",
			why, short(root.Cert), short(st.signer.Cert))
		r.log.Info("root rotation started: phase Prepare", "reason", why, "newRoot", pki.Fingerprint(root.Cert), "oldRoot", pki.Fingerprint(st.signer.Cert))
		return true, nil

	case meshv1alpha1.PhasePrepare:
		if st.inter == nil || !isGenerated(st.signing) || st.serving == nil || !isGenerated(st.server) {
			s.problems = append(s.problems, fmt.Sprintf("a root rotation is in Prepare, but secret %s or %s is missing, broken or not generated by relay-server: restore them (relayctl restore) so that Activate can move them to the new root",
				r.cfg.SigningTLSSecret.NamespacedName(r.cfg.Namespace), r.cfg.TLSSecret.NamespacedName(r.cfg.Namespace)))
			return false, nil
		}
		// Activate replaces previous.crt: no live client certificate may
		// still come from the CA there.
		if len(st.inter.Previous) > 0 {
			s.pending, s.count = pendingClusters(kcs, meshv1alpha1.PendingIssuedByPreviousIntermediate, issuedBy(pki.Fingerprint(st.inter.Previous[0]), now))
			if s.count > 0 {
				r.blocked(rt, s, true)
				return false, nil
			}
		}
		s.pending, s.count = pendingClusters(kcs, meshv1alpha1.PendingBundleNotAcknowledged, unacknowledged(bundleSHA))
		if s.count > 0 && r.prepareOverdue(st, s) {
			// A connected agent that never acknowledges (broken, or a
			// cluster that means harm) may not hold every other cluster's
			// rotation until the server certificate expires: past the
			// deadline it is left behind, and must be registered again.
			r.noteOnce(rt, "prepare-overdue", fmt.Sprint(s.count), corev1.EventTypeWarning, EventRotationBlocked,
				fmt.Sprintf("phase Prepare is past its deadline with %d connected cluster(s) that never acknowledged the new bundle (%s...): moving on to Activate; they must be registered again (relayctl register --force)", s.count, s.pending[0].Cluster))
			s.pending, s.count = nil, 0
		}
		if s.count > 0 || !overlapDone {
			r.blocked(rt, s, overlapDone)
			return false, nil
		}
		return true, r.activate(ctx, rt, s)

	case meshv1alpha1.PhaseActivate:
		if st.serving != nil && isGenerated(st.server) && !signedByAny(st.serving.Cert, []*x509.Certificate{st.signer.Cert}) {
			// A leader that stopped between the two moves of Activate.
			return true, r.moveServer(ctx, rt, s)
		}
		old := st.outgoing()
		s.outgoing = old[0]
		shas := map[string]bool{}
		for _, o := range old {
			shas[pki.Fingerprint(o)] = true
		}
		s.pending, s.count = pendingClusters(kcs, meshv1alpha1.PendingChainsToOldRoot, chainsToRoots(shas, now))
		if s.count > 0 || r.lastPending.IsZero() {
			r.lastPending = now
		}
		if s.count > 0 || !overlapDone || now.Sub(r.lastPending) < handover {
			r.blocked(rt, s, overlapDone)
			return false, nil
		}
		return true, r.retire(ctx, rt, s, old)

	case meshv1alpha1.PhaseRetire:
		s.pending, s.count = pendingClusters(kcs, meshv1alpha1.PendingBundleNotAcknowledged, unacknowledged(bundleSHA))
		if s.count > 0 {
			r.blocked(rt, s, true)
			return false, nil
		}
		status.Rotations.Root++
		status.RotationStartedAt = nil
		r.metrics.counted(certRoot, resultSuccess)
		r.event(rt, corev1.EventTypeNormal, EventRotated, "Rotate", "root rotation complete: every connected agent trusts only root %s", short(st.signer.Cert))
		r.log.Info("root rotation complete", "root", pki.Fingerprint(st.signer.Cert))
		s.phase, s.since = meshv1alpha1.PhaseStable, now
		return false, nil
	}
	return false, nil
}

// Prepare waits for connected agents to acknowledge the new bundle for
// prepareDeadlineOverlaps rootRotationOverlaps, and at least
// minPrepareDeadline.
const (
	prepareDeadlineOverlaps = 7
	minPrepareDeadline      = 10 * time.Minute
)

// prepareOverdue reports whether Prepare has waited long enough for its
// acknowledgements: seven overlaps (ten minutes at least), or the
// intermediate or the server certificate reaching its renewal point
// (Prepare holds their renewals).
func (r *rotation) prepareOverdue(st *caState, s *step) bool {
	if s.now.Sub(s.since) >= max(prepareDeadlineOverlaps*r.cfg.RootRotationOverlap.Duration, minPrepareDeadline) {
		return true
	}
	return !s.now.Before(renewAt(st.inter.Cert, r.cfg.SigningRenewalRatio)) || !s.now.Before(renewAt(st.serving.Cert, r.cfg.ServerRenewalRatio))
}

// activate moves the signing intermediate, then the server certificate,
// to the new root. The replaced intermediate is kept in previous.crt so
// that the client certificates it issued are still admitted; relay-server
// tells their agents to renew (renewalPlanner).
func (r *rotation) activate(ctx context.Context, rt *meshv1alpha1.RelayTrust, s *step) error {
	st, now := s.st, s.now
	inter, err := r.newIntermediate(st.signer, now)
	if err != nil {
		return r.failed(rt, certIntermediate, err)
	}
	if err := r.updateSecret(ctx, st.signing, signingData(inter, st.inter.Cert), nil); err != nil {
		return r.failed(rt, certIntermediate, err)
	}
	r.event(rt, corev1.EventTypeNormal, EventPhaseChanged, "Rotate", "phase Activate: every connected agent acknowledged the bundle; intermediate %s under the new root %s signs from now on",
		short(inter.Cert), short(st.signer.Cert))
	r.log.Info("root rotation: phase Activate", "intermediate", pki.Fingerprint(inter.Cert))
	s.phase, s.since, r.lastPending = meshv1alpha1.PhaseActivate, now, time.Time{}
	return r.moveServer(ctx, rt, s)
}

// moveServer issues the server certificate under the signing root.
func (r *rotation) moveServer(ctx context.Context, rt *meshv1alpha1.RelayTrust, s *step) error {
	st := s.st
	if st.server == nil || !isGenerated(st.server) {
		return nil
	}
	// Read again: activate has just changed another secret, and this one
	// must be written against its latest version.
	var cur corev1.Secret
	if err := r.secrets.Get(ctx, client.ObjectKeyFromObject(st.server), &cur); err != nil {
		return err
	}
	srv, err := r.newServer(st.signer, s.now)
	if err != nil {
		return r.failed(rt, certServer, err)
	}
	if err := r.updateSecret(ctx, &cur, servingData(srv), nil); err != nil {
		return r.failed(rt, certServer, err)
	}
	r.rotated(rt, certServer, certOf(st.serving), srv.Cert, "moved to the new root")
	return nil
}

// retire removes the old roots from the bundle, after the signing
// secret's previous.crt when it chains to them.
func (r *rotation) retire(ctx context.Context, rt *meshv1alpha1.RelayTrust, s *step, old []*x509.Certificate) error {
	st := s.st
	if m := st.inter; m != nil && len(m.Previous) > 0 && signedByAny(m.Previous[0], old) {
		data := maps.Clone(st.signing.Data)
		delete(data, relaysecret.KeyPreviousCACert)
		if err := r.updateSecret(ctx, st.signing, data, nil); err != nil {
			return r.failed(rt, certRoot, err)
		}
		return nil // the next tick retires the roots
	}
	keep := []*x509.Certificate{st.signer.Cert}
	data := maps.Clone(st.root.Data)
	data[relaysecret.KeyCACert] = bundlePEM(keep)
	if err := r.updateSecret(ctx, st.root, data, nil); err != nil {
		return r.failed(rt, certRoot, err)
	}
	r.event(rt, corev1.EventTypeNormal, EventPhaseChanged, "Rotate", "phase Retire: no live client certificate chains to %s, which leaves the trust bundle", short(old[0]))
	r.log.Info("root rotation: phase Retire", "oldRoot", pki.Fingerprint(old[0]))
	s.phase, s.since, s.outgoing = meshv1alpha1.PhaseRetire, s.now, old[0]
	return nil
}

// intermediateStep renews the signing intermediate when it is due or asked
// for, in Stable or Retire: in Prepare the new root is not trusted yet and
// in Activate the previous intermediate still admits the old root's
// clients. It waits while a live client certificate still comes from the
// intermediate the current one replaced, which the renewal stops
// admitting.
func (r *rotation) intermediateStep(ctx context.Context, rt *meshv1alpha1.RelayTrust, status *meshv1alpha1.RelayTrustStatus, s *step, kcs []meshv1alpha1.KubernetesCluster) (bool, error) {
	st, now := s.st, s.now
	if st.inter == nil || !isGenerated(st.signing) || (s.phase != meshv1alpha1.PhaseStable && s.phase != meshv1alpha1.PhaseRetire) {
		return false, nil
	}
	req := rt.Spec.RotateIntermediate
	asked := requested(req, status.ObservedRequests.Intermediate)
	if now.Before(renewAt(st.inter.Cert, r.cfg.SigningRenewalRatio)) && !asked {
		return false, nil
	}
	if len(st.inter.Previous) > 0 {
		pending, n := pendingClusters(kcs, meshv1alpha1.PendingIssuedByPreviousIntermediate, issuedBy(pki.Fingerprint(st.inter.Previous[0]), now))
		if n > 0 {
			if s.count == 0 {
				s.pending, s.count = pending, n
			}
			r.noteOnce(rt, "intermediate-blocked", fmt.Sprint(n), corev1.EventTypeNormal, EventRotationBlocked,
				fmt.Sprintf("intermediate renewal waits for %d cluster(s) whose client certificate comes from the intermediate before the current one; they are told to renew", n))
			return false, nil
		}
	}
	r.forget("intermediate-blocked")
	inter, err := r.newIntermediate(st.signer, now)
	if err != nil {
		return true, r.failed(rt, certIntermediate, err)
	}
	var prev *x509.Certificate
	if now.Before(st.inter.Cert.NotAfter) {
		prev = st.inter.Cert
	}
	if err := r.updateSecret(ctx, st.signing, signingData(inter, prev), nil); err != nil {
		return true, r.failed(rt, certIntermediate, err)
	}
	if asked {
		status.ObservedRequests.Intermediate = req.RequestedAt.DeepCopy()
	}
	status.Rotations.Intermediate++
	r.rotated(rt, certIntermediate, st.inter.Cert, inter.Cert, "")
	return true, nil
}

// serverStep renews the server certificate when it is due or asked for,
// except in Prepare, where the signing root is not trusted by every agent
// yet (Activate moves it).
func (r *rotation) serverStep(ctx context.Context, rt *meshv1alpha1.RelayTrust, status *meshv1alpha1.RelayTrustStatus, s *step) (bool, error) {
	st, now := s.st, s.now
	if st.serving == nil || !isGenerated(st.server) || s.phase == meshv1alpha1.PhasePrepare {
		return false, nil
	}
	req := rt.Spec.RotateServer
	asked := requested(req, status.ObservedRequests.Server)
	if now.Before(renewAt(st.serving.Cert, r.cfg.ServerRenewalRatio)) && !asked {
		return false, nil
	}
	srv, err := r.newServer(st.signer, now)
	if err != nil {
		return true, r.failed(rt, certServer, err)
	}
	if err := r.updateSecret(ctx, st.server, servingData(srv), nil); err != nil {
		return true, r.failed(rt, certServer, err)
	}
	if asked {
		status.ObservedRequests.Server = req.RequestedAt.DeepCopy()
	}
	status.Rotations.Server++
	r.rotated(rt, certServer, st.serving.Cert, srv.Cert, "")
	return true, nil
}

// blocked records, once per phase and overlap state, what a phase waits for.
func (r *rotation) blocked(rt *meshv1alpha1.RelayTrust, s *step, overlapDone bool) {
	if !overlapDone || s.count == 0 {
		return
	}
	names := ""
	for i, p := range s.pending {
		if i == 5 {
			names += ", ..."
			break
		}
		if i > 0 {
			names += ", "
		}
		names += p.Cluster
	}
	r.noteOnce(rt, "root-blocked", string(s.phase)+fmt.Sprint(s.count), corev1.EventTypeNormal, EventRotationBlocked,
		fmt.Sprintf("phase %s waits for %d cluster(s) (%s): %s; relayctl rotate status lists them", s.phase, s.count, s.pending[0].Reason, names))
}

// newRoot, newIntermediate and newServer make the certificates relay-server
// generates, with the configured lifetimes (capped by the issuer's).
func (r *rotation) newRoot(now time.Time) (*pki.Certified, error) {
	ttl := r.cfg.RootCertificateTTL.Duration
	return pki.NewRootCA(pki.Options{CommonName: relaysecret.RootCommonName, Organization: []string{relaysecret.Organization}, TTL: ttl, Now: now, Backdate: generatedBackdate(ttl)})
}

func (r *rotation) newIntermediate(signer *pki.Certified, now time.Time) (*pki.Certified, error) {
	ttl := r.cfg.SigningCertificateTTL.Duration
	return signer.NewIntermediateCA(pki.Options{CommonName: relaysecret.SigningCommonName, Organization: []string{relaysecret.Organization}, TTL: ttl, Now: now, Backdate: generatedBackdate(ttl)})
}

func (r *rotation) newServer(signer *pki.Certified, now time.Time) (*pki.Certified, error) {
	ttl := r.cfg.ServerCertificateTTL.Duration
	return signer.IssueServer(serverOptions(r.cfg, ttl, now))
}

// serverOptions are the options of the server certificate relay-server
// generates: the authority and every name in its namespace.
func serverOptions(cfg *config.Server, ttl time.Duration, now time.Time) pki.Options {
	return pki.Options{CommonName: cfg.Authority, DNSNames: uniq("*."+cfg.Namespace, cfg.Authority), TTL: ttl, Now: now, Backdate: generatedBackdate(ttl)}
}

// rootData is the root secret's data for signer root, with the bundle
// keep beside it (nil: the root alone).
func rootData(root *pki.Certified, keep []*x509.Certificate) map[string][]byte {
	keyPEM, _ := root.KeyPEM()
	bundle := append(dedupe(keep), root.Cert)
	return map[string][]byte{relaysecret.KeyTLSCert: root.CertPEM(), relaysecret.KeyTLSKey: keyPEM, relaysecret.KeyCACert: bundlePEM(dedupe(bundle))}
}

// signingData is the signing secret's data for inter, with previous (when
// not nil) in previous.crt.
func signingData(inter *pki.Certified, previous *x509.Certificate) map[string][]byte {
	keyPEM, _ := inter.KeyPEM()
	data := map[string][]byte{relaysecret.KeyTLSCert: inter.CertPEM(), relaysecret.KeyTLSKey: keyPEM, relaysecret.KeyCACert: inter.CAPEM()}
	if previous != nil {
		data[relaysecret.KeyPreviousCACert] = pki.EncodeCertificates(previous)
	}
	return data
}

func servingData(srv *pki.Certified) map[string][]byte {
	keyPEM, _ := srv.KeyPEM()
	return map[string][]byte{relaysecret.KeyTLSCert: srv.CertPEM(), relaysecret.KeyTLSKey: keyPEM, relaysecret.KeyCACert: srv.CAPEM()}
}

// updateSecret writes data (and the annotations; "" removes one) into s,
// against the version read: a secret changed since (by another writer, or
// by a step a previous leader took) makes the update fail, and the next
// tick reads it again.
func (r *rotation) updateSecret(ctx context.Context, s *corev1.Secret, data map[string][]byte, annotations map[string]string) error {
	u := s.DeepCopy()
	u.Data = data
	for k, v := range annotations {
		if v == "" {
			delete(u.Annotations, k)
			continue
		}
		if u.Annotations == nil {
			u.Annotations = map[string]string{}
		}
		u.Annotations[k] = v
	}
	if err := r.client.Update(ctx, u); err != nil {
		return fmt.Errorf("failed to update secret %s/%s: %w", s.Namespace, s.Name, err)
	}
	r.writes++
	return nil
}

func certOf(m *relaysecret.Material) *x509.Certificate {
	if m == nil {
		return nil
	}
	return m.Cert
}

// short names a certificate in an Event: its common name and the start of
// its SHA-256.
func short(c *x509.Certificate) string {
	if c == nil {
		return "(none)"
	}
	return fmt.Sprintf("%q (sha256 %s)", c.Subject.CommonName, pki.Fingerprint(c)[:12])
}

func (r *rotation) rotated(rt *meshv1alpha1.RelayTrust, which string, old, cur *x509.Certificate, why string) {
	r.metrics.counted(which, resultSuccess)
	note := fmt.Sprintf("%s certificate renewed: %s replaces %s, valid until %s", which, short(cur), short(old), cur.NotAfter.UTC().Format(time.RFC3339))
	if why != "" {
		note += " (" + why + ")"
	}
	r.event(rt, corev1.EventTypeNormal, EventRotated, "Rotate", "%s", note)
	r.log.Info("rotated", "certificate", which, "sha256", pki.Fingerprint(cur), "notAfter", cur.NotAfter)
}

func (r *rotation) replaced(rt *meshv1alpha1.RelayTrust, which string, old, cur *x509.Certificate, consequence string) {
	r.metrics.counted(which, resultSuccess)
	note := fmt.Sprintf("generated %s certificate %s had expired: replaced by %s, valid until %s", which, short(old), short(cur), cur.NotAfter.UTC().Format(time.RFC3339))
	if consequence != "" {
		note += "; " + consequence
	}
	r.event(rt, corev1.EventTypeWarning, EventCertificateReplaced, "Replace", "%s", note)
	r.log.Error(errors.New(note), "replaced an expired certificate")
}

func (r *rotation) failed(rt *meshv1alpha1.RelayTrust, which string, err error) error {
	r.metrics.counted(which, resultFailure)
	if !apierrors.IsConflict(err) {
		r.noteOnce(rt, "failed-"+which, err.Error(), corev1.EventTypeWarning, EventRotationFailed, fmt.Sprintf("%s rotation failed: %v", which, err))
	}
	return err
}

func (r *rotation) event(rt *meshv1alpha1.RelayTrust, typ, reason, action, note string, args ...any) {
	if r.rec == nil {
		return
	}
	r.rec.Eventf(regardingTrust(rt), nil, typ, reason, action, note, args...)
}

// noteOnce records an Event for key unless the same value was recorded
// last for it.
func (r *rotation) noteOnce(rt *meshv1alpha1.RelayTrust, key, value, typ, reason, note string) {
	if r.noted == nil {
		r.noted = map[string]string{}
	}
	if r.noted[key] == value {
		return
	}
	r.noted[key] = value
	r.event(rt, typ, reason, "Rotate", "%s", note)
}

func (r *rotation) forget(key string) { delete(r.noted, key) }

func regardingTrust(rt *meshv1alpha1.RelayTrust) *meshv1alpha1.RelayTrust {
	return &meshv1alpha1.RelayTrust{
		TypeMeta:   metav1.TypeMeta{APIVersion: meshv1alpha1.GroupVersion.String(), Kind: "RelayTrust"},
		ObjectMeta: metav1.ObjectMeta{Namespace: rt.Namespace, Name: rt.Name, UID: rt.UID},
	}
}

// publishBundle publishes the bundle as the management cluster's
// ClusterTrustBundle when it changed.
func (r *rotation) publishBundle(ctx context.Context, st *caState) error {
	if r.publish == nil || len(st.bundle) == 0 {
		return nil
	}
	sha := bundleSHA256(st.bundle)
	if sha == r.published {
		return nil
	}
	if err := r.publish(ctx, bundlePEM(st.bundle)); err != nil {
		return err
	}
	r.published = sha
	return nil
}

// writeStatus writes what the tick found into the RelayTrust's status,
// when it changed.
func (r *rotation) writeStatus(ctx context.Context, rt *meshv1alpha1.RelayTrust, status *meshv1alpha1.RelayTrustStatus, s *step, kcs []meshv1alpha1.KubernetesCluster) error {
	st, cfg := s.st, r.cfg
	status.ObservedGeneration = rt.Generation
	if status.Phase != s.phase || status.PhaseSince == nil {
		since := metav1.NewTime(s.since)
		status.Phase, status.PhaseSince = s.phase, &since
	}
	if s.stale {
		return r.patchStatus(ctx, rt, status, s)
	}
	rootName, signingName, serverName := r.secretKeys()
	status.Root, status.Incoming = nil, nil
	if st.signer != nil {
		signer := trustCertificate(rootName.Name, st.signer.Cert, isGenerated(st.root), cfg.RootRenewalRatio)
		if s.phase == meshv1alpha1.PhasePrepare {
			status.Incoming = signer
			if old := st.outgoing(); len(old) > 0 {
				status.Root = trustCertificate(rootName.Name, old[0], isGenerated(st.root), cfg.RootRenewalRatio)
			}
		} else {
			status.Root = signer
		}
	} else if len(st.bundle) > 0 {
		status.Root = trustCertificate(rootName.Name, st.bundle[0], false, 0)
	}
	switch {
	case s.outgoing != nil:
		status.Outgoing = trustCertificate(rootName.Name, s.outgoing, isGenerated(st.root), 0)
		status.Outgoing.RenewAt = nil
	case s.phase == meshv1alpha1.PhaseStable || s.phase == meshv1alpha1.PhasePrepare:
		status.Outgoing = nil
	}
	status.Intermediate = trustCertificate(signingName.Name, certOf(st.inter), isGenerated(st.signing), cfg.SigningRenewalRatio)
	status.Server = trustCertificate(serverName.Name, certOf(st.serving), isGenerated(st.server), cfg.ServerRenewalRatio)
	status.Bundle = nil
	if len(st.bundle) > 0 {
		status.Bundle = &meshv1alpha1.BundleStatus{SHA256: bundleSHA256(st.bundle), Roots: int32(len(st.bundle))}
		for i := range kcs {
			if connected(&kcs[i]) {
				status.Bundle.Connected++
				if kcs[i].Status.TrustBundleSHA256 == status.Bundle.SHA256 {
					status.Bundle.Acknowledged++
				}
			}
		}
	}
	status.Pending, status.PendingCount = s.pending, s.count
	meta.SetStatusCondition(&status.Conditions, readyCondition(st, s, r.cfg, 5*r.interval(), rt.Generation))
	progressing := metav1.Condition{Type: ConditionProgressing, Status: metav1.ConditionFalse, Reason: "Stable", Message: "no root rotation is under way", ObservedGeneration: rt.Generation}
	if s.phase != meshv1alpha1.PhaseStable {
		progressing.Status, progressing.Reason = metav1.ConditionTrue, string(s.phase)
		progressing.Message = fmt.Sprintf("root rotation in phase %s since %s", s.phase, s.since.UTC().Format(time.RFC3339))
		if s.count > 0 {
			progressing.Message += fmt.Sprintf(", waiting for %d cluster(s)", s.count)
		}
	}
	meta.SetStatusCondition(&status.Conditions, progressing)
	return r.patchStatus(ctx, rt, status, s)
}

// patchStatus writes status when it differs from rt's.
func (r *rotation) patchStatus(ctx context.Context, rt *meshv1alpha1.RelayTrust, status *meshv1alpha1.RelayTrustStatus, s *step) error {
	r.metrics.setPhase(s.phase)
	if apiequality.Semantic.DeepEqual(&rt.Status, status) {
		return nil
	}
	// A merge patch, not an update: only the leader writes this status,
	// and the cache the RelayTrust was read from may lag its own last
	// write, which an update would keep failing on.
	u := rt.DeepCopy()
	u.Status = *status
	if err := r.client.Status().Patch(ctx, u, client.MergeFrom(rt)); err != nil {
		return fmt.Errorf("failed to update the status of RelayTrust %s/%s: %w", rt.Namespace, rt.Name, err)
	}
	return nil
}

// readyCondition says whether every certificate is valid and renewed on
// time: a generated one past its renewal point by more than a tick is
// overdue, one relay-server does not rotate is reported when it is past
// its renewal point.
func readyCondition(st *caState, s *step, cfg *config.Server, slack time.Duration, generation int64) metav1.Condition {
	c := metav1.Condition{Type: ConditionReady, Status: metav1.ConditionTrue, Reason: "Valid", Message: "every certificate is valid and renewed on schedule", ObservedGeneration: generation}
	fail := func(reason, msg string) {
		if c.Status == metav1.ConditionTrue {
			c.Status, c.Reason, c.Message = metav1.ConditionFalse, reason, msg
		}
	}
	for _, p := range s.problems {
		fail("Problem", p)
	}
	for _, p := range st.problems {
		fail("Invalid", p.Error())
	}
	for _, cert := range []struct {
		name  string
		c     *x509.Certificate
		gen   bool
		ratio float64
	}{
		{"root", certOrNil(st.signer), isGenerated(st.root), cfg.RootRenewalRatio},
		{"intermediate", certOf(st.inter), isGenerated(st.signing), cfg.SigningRenewalRatio},
		{"server", certOf(st.serving), isGenerated(st.server), cfg.ServerRenewalRatio},
	} {
		if cert.c == nil {
			continue
		}
		due := renewAt(cert.c, cert.ratio)
		switch {
		case !s.now.Before(cert.c.NotAfter):
			fail("Expired", fmt.Sprintf("the %s certificate expired at %s", cert.name, cert.c.NotAfter.UTC().Format(time.RFC3339)))
		case !cert.gen && !s.now.Before(due):
			fail("RenewalDue", fmt.Sprintf("the %s certificate, which relay-server did not generate and never renews, expires at %s: renew it with its issuer",
				cert.name, cert.c.NotAfter.UTC().Format(time.RFC3339)))
		case cert.gen && s.now.Sub(due) > slack && (cert.name != "root" || s.phase == meshv1alpha1.PhaseStable):
			fail("RenewalOverdue", fmt.Sprintf("the %s certificate was due for renewal at %s and is not renewed yet: the rotation is blocked (see status.pending and the Events)",
				cert.name, due.UTC().Format(time.RFC3339)))
		}
	}
	return c
}

func certOrNil(c *pki.Certified) *x509.Certificate {
	if c == nil {
		return nil
	}
	return c.Cert
}
