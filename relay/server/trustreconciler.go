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
// the relay streams left for it. A deleted policy is forgotten: its
// clusters' intermediates are no longer renewed.
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
	if l.ready && r.CheckAll != nil {
		r.CheckAll()
	}
	return l.result, err
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
	// setStatus writes the policy's root and Ready condition.
	setStatus func(*meshv1alpha1.RootTrustPolicyStatus)
}

// load loads p's root into the trust state, or forgets p when it has no
// usable root, and returns how the status says so.
func (r *trustReconciler) load(ctx context.Context, log logr.Logger, p *meshv1alpha1.RootTrustPolicy) policyLoad {
	// notReady forgets the policy (nothing is issued under it) and says why
	// in its Ready condition.
	notReady := func(result reconcile.Result, reason, msg string) policyLoad {
		r.State.forgetPolicy(p.Name)
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
	signer, err := ensureTrustRoot(ctx, r.Client, r.API, p, r.RelaySecrets, r.Clock.Now())
	if err != nil {
		r.Metrics.trustFailures.WithLabelValues(p.Name, failRoot).Inc()
		return notReady(reconcile.Result{RequeueAfter: time.Minute}, "RootUnavailable", err.Error())
	}
	tp := newTrustPolicy(p, signer, ttl)
	root := signer.Root()
	if old := r.State.setPolicy(tp); old == nil || old.rootSHA256 != tp.rootSHA256 {
		log.Info("RootTrustPolicy root loaded", "secret", rootSecretName(p).String(), "sha256", tp.rootSHA256, "notAfter", root.NotAfter)
	}
	rs := rootStatus(rootSecretName(p), root)
	return policyLoad{ready: true, result: reconcile.Result{RequeueAfter: rootRecheck}, setStatus: func(st *meshv1alpha1.RootTrustPolicyStatus) {
		st.ObservedGeneration = p.Generation
		if st.Root != nil && st.Root.SHA256 != rs.SHA256 {
			for i := range st.Clusters {
				st.Clusters[i].Issued = false
			}
		}
		st.Root = rs
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: "Ready", Status: metav1.ConditionTrue, Reason: "RootLoaded",
			Message: "the root is loaded; connected clusters get their intermediates", ObservedGeneration: p.Generation})
	}}
}
