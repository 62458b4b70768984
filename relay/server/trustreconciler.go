package server

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/go-logr/logr"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/meshrelay/meshrelay/internal/everyreplica"
	meshv1alpha1 "github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
)

// trustReconcilerOptions wire a trustReconciler.
type trustReconcilerOptions struct {
	// Client reads through the cache and creates generated roots; API
	// reads from the API server.
	Client    client.Client
	API       client.Reader
	Namespace string
	// RelaySecrets are the relay secrets by name (relaySecretsOf), which a
	// policy may not take its root from.
	RelaySecrets map[string]string
	State        *trustState
	Results      *pendingResults
	Queue        *policyQueue
	// CheckAll checks the connected clusters once a policy is loaded.
	CheckAll func()
	Metrics  *metrics
	Clock    clock.PassiveClock
	Log      logr.Logger
}

// trustReconciler reconciles the RootTrustPolicies of the server's
// namespace: it loads each policy's root (making it when generated) into
// the trust state and writes the policy's status, with the cluster results
// the relay streams left for it and the overlap of a root change
// (advanceOverlap). A deleted policy is forgotten: its clusters'
// intermediates are no longer renewed.
type trustReconciler struct {
	trustReconcilerOptions
	status *trustStatusWriter
}

func newTrustReconciler(o trustReconcilerOptions) *trustReconciler {
	return &trustReconciler{trustReconcilerOptions: o, status: &trustStatusWriter{client: o.Client, api: o.API, namespace: o.Namespace}}
}

// rootRecheck is how often a loaded policy's root secret is read again:
// root secrets are read by name, not watched, since their names are the
// policies' and relay-server's Role cannot name them in advance.
const rootRecheck = time.Minute

// setup registers the reconciler with mgr: its policies and the policy
// queue enqueue it, and each loaded policy comes back every rootRecheck.
func (r *trustReconciler) setup(mgr ctrl.Manager) error {
	err := ctrl.NewControllerManagedBy(mgr).Named("root-trust-policies").
		For(&meshv1alpha1.RootTrustPolicy{}).WithOptions(everyreplica.ControllerOptions()).
		WatchesRawSource(r.Queue.source()).
		Complete(r)
	if err != nil {
		return fmt.Errorf("failed to set up the RootTrustPolicy controller: %w", err)
	}
	return nil
}

// Reconcile loads req's policy and writes its status: first the cluster
// results pending for it, then its root and Ready condition. Results that
// fail to be written stay pending for the retry.
func (r *trustReconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	log := r.Log.WithValues("policy", req.Name)
	var p meshv1alpha1.RootTrustPolicy
	err := r.Client.Get(ctx, req.NamespacedName, &p)
	if apierrors.IsNotFound(err) || (err == nil && p.DeletionTimestamp != nil) || (err == nil && p.Namespace != r.Namespace) {
		r.Results.drop(req.Name)
		r.Metrics.trustRoots.forget(req.Name)
		if r.State.forgetPolicy(req.Name) {
			log.Info("RootTrustPolicy removed: its clusters' intermediates are no longer renewed")
		}
		return reconcile.Result{}, nil
	}
	if err != nil {
		return reconcile.Result{}, err
	}
	results := r.Results.take(p.Name)
	l := r.load(ctx, log, &p)
	err = r.status.update(ctx, p.Name, func(st *meshv1alpha1.RootTrustPolicyStatus) {
		applyResults(st, results)
		l.setStatus(st)
	})
	if err != nil && len(results) > 0 {
		r.Results.putBack(p.Name, results)
		if !apierrors.IsNotFound(err) {
			for _, c := range resultClusters(results) {
				log.Error(err, "failed to record the intermediate in the policy's status", "cluster", c)
			}
		}
	}
	result := l.result
	if l.loaded != nil {
		result = l.loaded(result)
	}
	if l.ready && r.CheckAll != nil {
		r.CheckAll()
	}
	return result, err
}

// resultClusters returns the clusters rs are about, each once.
func resultClusters(rs []clusterResult) []string {
	var out []string
	for _, r := range rs {
		if !slices.Contains(out, r.cluster) {
			out = append(out, r.cluster)
		}
	}
	return out
}

// policyLoad is what loading a policy gave.
type policyLoad struct {
	// ready says whether the policy's root is loaded.
	ready  bool
	result reconcile.Result
	// setStatus writes the policy's root, trusted roots and Ready
	// condition.
	setStatus func(*meshv1alpha1.RootTrustPolicyStatus)
	// loaded, when set, loads the policy into the trust state once its
	// status is written (or failed to be), and returns result, sooner when
	// the replaced roots of a root change are to leave sooner.
	loaded func(result reconcile.Result) reconcile.Result
}

// load loads p's root into the trust state, or forgets p when it has no
// usable root, and returns how the status says so.
func (r *trustReconciler) load(ctx context.Context, log logr.Logger, p *meshv1alpha1.RootTrustPolicy) policyLoad {
	// notReady forgets the policy (nothing is issued under it) and says why
	// in its Ready condition.
	notReady := func(result reconcile.Result, reason, msg string) policyLoad {
		r.State.forgetPolicy(p.Name)
		r.Metrics.trustRoots.forget(p.Name)
		log.Info("RootTrustPolicy not ready", "reason", reason, "error", msg)
		return policyLoad{result: result, setStatus: func(st *meshv1alpha1.RootTrustPolicyStatus) {
			st.ObservedGeneration = p.Generation
			meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: "Ready", Status: metav1.ConditionFalse, Reason: reason, Message: msg, ObservedGeneration: p.Generation})
		}}
	}
	ttl, err := policyTTL(p)
	if err != nil {
		return notReady(reconcile.Result{}, "InvalidSpec", err.Error())
	}
	workloadTTL, err := policyWorkloadTTL(p)
	if err != nil {
		return notReady(reconcile.Result{}, "InvalidSpec", err.Error())
	}
	signer, err := ensureTrustRoot(ctx, r.Client, r.API, p, r.RelaySecrets, r.Clock.Now())
	if err != nil {
		r.Metrics.trustFailures.WithLabelValues(p.Name, failRoot).Inc()
		return notReady(reconcile.Result{RequeueAfter: time.Minute}, "RootUnavailable", err.Error())
	}
	tp := newTrustPolicy(p, signer, ttl, workloadTTL)
	root := signer.Root()
	rs := rootStatus(rootSecretName(p), root)
	now := r.Clock.Now()
	// Until the status says otherwise, root-cert.pem keeps what it kept.
	old := r.State.policy(p.Name)
	o := overlap{previous: carriedPrevious(old, tp)}
	var trusted []meshv1alpha1.TrustedRoot
	ran := false
	inScope := func(cluster string) bool { return r.State.wouldServe(tp, cluster) && r.registered(ctx, cluster) }
	l := policyLoad{ready: true, result: reconcile.Result{RequeueAfter: rootRecheck}}
	l.setStatus = func(st *meshv1alpha1.RootTrustPolicyStatus) {
		st.ObservedGeneration = p.Generation
		if st.Root != nil && st.Root.SHA256 != rs.SHA256 {
			for i := range st.Clusters {
				st.Clusters[i].Issued = false
			}
		}
		o = advanceOverlap(st, rs, inScope, workloadTTL, now)
		trusted, ran = slices.Clone(st.TrustedRoots), true
		st.Root = rs
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: "Ready", Status: metav1.ConditionTrue, Reason: "RootLoaded",
			Message: "the root is loaded; connected clusters get their intermediates", ObservedGeneration: p.Generation})
	}
	l.loaded = func(result reconcile.Result) reconcile.Result {
		if !ran && old == nil {
			// The status, which says which replaced roots root-cert.pem
			// keeps, could not be read: the retry loads the policy.
			return result
		}
		tp = tp.withPrevious(o.previous)
		r.State.setPolicy(tp)
		if old == nil || old.rootSHA256 != tp.rootSHA256 {
			log.Info("RootTrustPolicy root loaded", "secret", rootSecretName(p).String(), "sha256", tp.rootSHA256, "notAfter", root.NotAfter)
		}
		if o.changed {
			log.Info("RootTrustPolicy root changed: root-cert.pem keeps the replaced roots until every cluster holds an intermediate under the new one and workloadCertTTL has passed",
				"sha256", tp.rootSHA256, "keeping", o.previous, "workloadCertTTL", workloadTTL)
		}
		if len(o.retired) > 0 {
			log.Info("RootTrustPolicy root change done: the replaced roots leave root-cert.pem", "sha256", tp.rootSHA256, "retired", o.retired)
		}
		if len(trusted) == 0 {
			trusted = []meshv1alpha1.TrustedRoot{{SHA256: rs.SHA256, NotAfter: rs.NotAfter}}
		}
		expiry := map[string]time.Time{}
		for _, t := range trusted {
			expiry[t.SHA256] = t.NotAfter.Time
		}
		r.Metrics.trustRoots.set(p.Name, expiry)
		if !o.retireAt.IsZero() {
			result.RequeueAfter = min(result.RequeueAfter, max(o.retireAt.Sub(now), time.Second))
		}
		return result
	}
	return l
}

// registered reports whether cluster is a registered KubernetesCluster; a
// cluster that cannot be read counts as registered.
func (r *trustReconciler) registered(ctx context.Context, cluster string) bool {
	var kc meshv1alpha1.KubernetesCluster
	err := r.Client.Get(ctx, types.NamespacedName{Namespace: r.Namespace, Name: cluster}, &kc)
	return !apierrors.IsNotFound(err)
}
