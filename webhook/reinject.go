package webhook

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	meshv1alpha1 "github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
	"github.com/meshrelay/meshrelay/webhook/injector"
)

// reinjector closes the install-order race of the injection webhook. When
// the workload overlay is applied in one kubectl apply, the agent
// Deployment's pods can be created before the MutatingWebhookConfiguration
// is in force or before relay-webhook serves: they are admitted without
// their settings, and a restart keeps the pod spec, so they would never be
// injected. Once relay-webhook serves, the reinjector evicts each agent
// pod of its namespace that lacks the injection (injector.Injected) and has
// a controller to create it again, now through the webhook. Evictions go
// through the Eviction API, so PodDisruptionBudgets hold. It runs on every
// replica: a pod two replicas evict is evicted once.
type reinjector struct {
	client   client.Client
	settings injector.Settings
	// serving is nil once the webhook serves with its certificate.
	serving func() error
	backoff *evictionBackoff
	log     logr.Logger
}

// Requeue delays of the reinjector.
const (
	// notServingRecheck: the webhook does not serve yet.
	notServingRecheck = time.Second
	// budgetRecheck: a PodDisruptionBudget allows no eviction now.
	budgetRecheck = 10 * time.Second
)

// setupReinjector runs a reinjector for the agent pods of cfg.Namespace on
// mgr, whose cache holds only those pods. settings are the injector's;
// serving is the webhook's readiness.
func setupReinjector(mgr ctrl.Manager, ns string, settings injector.Settings, serving func() error, now func() time.Time, log logr.Logger) error {
	r := &reinjector{
		client: mgr.GetClient(), settings: settings, serving: serving,
		backoff: newEvictionBackoff(now), log: log,
	}
	agents := predicate.NewPredicateFuncs(func(o client.Object) bool {
		return o.GetNamespace() == ns && o.GetLabels()[meshv1alpha1.InjectLabel] == meshv1alpha1.InjectLabelValue
	})
	err := ctrl.NewControllerManagedBy(mgr).Named("reinject-agent-pods").
		For(&corev1.Pod{}, builder.WithPredicates(agents)).
		Complete(r)
	if err != nil {
		return fmt.Errorf("failed to set up the agent pod reinjector: %w", err)
	}
	return nil
}

// Reconcile evicts req's pod when it is an agent pod created without the
// injection, once the webhook serves and the backoff of its controller
// allows.
func (r *reinjector) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	var pod corev1.Pod
	if err := r.client.Get(ctx, req.NamespacedName, &pod); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	if pod.DeletionTimestamp != nil || injector.Injected(&pod, r.settings) {
		return reconcile.Result{}, nil
	}
	log := r.log.WithValues("pod", req.String())
	owner := metav1.GetControllerOf(&pod)
	if owner == nil {
		log.Info("agent pod was created without the injection and has no controller to create it again: delete it and create it again")
		return reconcile.Result{}, nil
	}
	log = log.WithValues("controller", owner.Kind+"/"+owner.Name)
	if err := r.serving(); err != nil {
		return reconcile.Result{RequeueAfter: notServingRecheck}, nil
	}
	if wait := r.backoff.wait(owner.UID, pod.UID); wait > 0 {
		return reconcile.Result{RequeueAfter: wait}, nil
	}
	if r.backoff.again(owner.UID, pod.UID) {
		log.Info("agent pod made after an eviction still lacks the injection: the MutatingWebhookConfiguration may not be in force yet, or may not send agent pods to this relay-webhook; evicting it, each round later")
	}
	siblings, err := r.podsOf(ctx, pod.Namespace, owner.UID)
	if err != nil {
		return reconcile.Result{}, err
	}
	eviction := &policyv1.Eviction{ObjectMeta: metav1.ObjectMeta{Namespace: pod.Namespace, Name: pod.Name}}
	err = r.client.SubResource("eviction").Create(ctx, &pod, eviction)
	switch {
	case apierrors.IsNotFound(err):
		return reconcile.Result{}, nil
	case apierrors.IsTooManyRequests(err):
		log.V(1).Info("a PodDisruptionBudget allows no eviction now", "reason", err.Error())
		return reconcile.Result{RequeueAfter: budgetRecheck}, nil
	case apierrors.IsForbidden(err):
		return reconcile.Result{}, fmt.Errorf("failed to evict agent pod %s created without the injection: %w: relay-webhook's Role in %s must allow create on pods/eviction", req, err, pod.Namespace)
	case err != nil:
		return reconcile.Result{}, fmt.Errorf("failed to evict agent pod %s created without the injection: %w", req, err)
	}
	r.backoff.evicted(owner.UID, pod.UID, siblings)
	log.Info("evicted an agent pod created before the injection webhook was in force; its controller creates it again, injected")
	return reconcile.Result{}, nil
}

// podsOf returns the UIDs of the agent pods of ns whose controller is
// controller, as the cache holds them.
func (r *reinjector) podsOf(ctx context.Context, ns string, controller types.UID) ([]types.UID, error) {
	var pods corev1.PodList
	if err := r.client.List(ctx, &pods, client.InNamespace(ns),
		client.MatchingLabels{meshv1alpha1.InjectLabel: meshv1alpha1.InjectLabelValue}); err != nil {
		return nil, fmt.Errorf("failed to list the agent pods of %s: %w", ns, err)
	}
	var uids []types.UID
	for _, p := range pods.Items {
		if o := metav1.GetControllerOf(&p); o != nil && o.UID == controller {
			uids = append(uids, p.UID)
		}
	}
	return uids, nil
}

// Backoff of evictions per controller: a pod created again without the
// injection after an eviction waits firstEvictionBackoff after it, and
// each further round twice as long, up to maxEvictionBackoff.
const (
	firstEvictionBackoff = 5 * time.Second
	maxEvictionBackoff   = 5 * time.Minute
)

// evictionBackoff keeps evictions from churning a controller's pods while
// the webhook configuration is not in force. The first eviction of a
// controller's pods records the pods it had then: those are evicted at
// once. Any other uninjected pod of that controller was made after an
// eviction and still came without the injection, so its eviction waits,
// and each such round waits twice as long.
type evictionBackoff struct {
	now  func() time.Time
	mu   sync.Mutex
	last map[types.UID]*lastEviction
}

type lastEviction struct {
	at time.Time
	// delay is how long after at a pod made since is evicted.
	delay time.Duration
	// before are the controller's pods when the round began.
	before map[types.UID]bool
}

func newEvictionBackoff(now func() time.Time) *evictionBackoff {
	if now == nil {
		now = time.Now
	}
	return &evictionBackoff{now: now, last: map[types.UID]*lastEviction{}}
}

// again reports whether pod, of controller, was made after a round of
// evictions of the controller's pods began.
func (b *evictionBackoff) again(controller, pod types.UID) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.againLocked(controller, pod)
}

func (b *evictionBackoff) againLocked(controller, pod types.UID) bool {
	l, ok := b.last[controller]
	return ok && !l.before[pod]
}

// wait returns how long the uninjected pod of controller must wait before
// it is evicted; zero or less means now.
func (b *evictionBackoff) wait(controller, pod types.UID) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.againLocked(controller, pod) {
		return 0
	}
	l := b.last[controller]
	return l.at.Add(l.delay).Sub(b.now())
}

// evicted records the eviction of pod of controller, whose pods were
// siblings just before. A pod made after the round began starts a new
// round, twice as long.
func (b *evictionBackoff) evicted(controller, pod types.UID, siblings []types.UID) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	for uid, l := range b.last {
		if now.Sub(l.at) > 2*maxEvictionBackoff {
			delete(b.last, uid)
		}
	}
	l, ok := b.last[controller]
	switch {
	case !ok:
		l = &lastEviction{delay: firstEvictionBackoff}
		b.last[controller] = l
	case !l.before[pod]:
		l.delay = min(2*l.delay, maxEvictionBackoff)
	default:
		// One more pod of the round: the round keeps its pods and delay.
		l.at = now
		return
	}
	l.at = now
	l.before = map[types.UID]bool{pod: true}
	for _, s := range siblings {
		l.before[s] = true
	}
}
