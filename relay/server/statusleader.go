package server

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/meshrelay/meshrelay/internal/everyreplica"
	meshv1alpha1 "github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
)

// replicaSweep is how often the leader looks for replicas that are gone.
const replicaSweep = 5 * time.Second

// leaderCoalesce is how long the leader waits after a change of a
// KubernetesCluster before it derives its status, so that the changes one
// event makes come to one write: a bootstrap spends the token (an
// annotation) and the replica writes its entry statusCoalesce later; an
// agent moving to another replica changes two entries. A new cluster is
// looked at once.
const leaderCoalesce = time.Second

// spentTokenWait is how long the leader waits after a bootstrap spent a
// cluster's token (and changed nothing else) for the bootstrapping
// replica's entry, which records the certificate and follows the spend as
// soon as that replica's status writes allow: a storm of bootstraps queues
// the entries behind the status rate limit for many seconds. The entry's
// own change brings the look forward to leaderCoalesce after it; a replica
// that stopped before writing its entry delays the Registered condition by
// this much.
const spentTokenWait = 30 * time.Second

// statusLeader derives each KubernetesCluster's conditions and summary
// from the entries of live replicas, records the near-expiry Event, and
// removes the entries of replicas that are gone. It runs on the leader.
type statusLeader struct {
	ns      string
	client  client.Client
	api     client.Reader
	applier *rawClusters
	events  *clusterEvents
	clock   clock.WithTicker
	log     logr.Logger
	mu      sync.Mutex
	// live is, for each replica live at the last sweep, when the process
	// that holds its Lease took it (the Lease's acquireTime, zero when it
	// has none); nil before the first sweep.
	live map[string]time.Time
	// observed is, for each replica Lease, the renewal last seen and when
	// this leader saw it change: a Lease is judged on this clock, not by
	// comparing its renewTime with it (the replicas' clocks may differ).
	observed map[string]observedLease
	// resync enqueues every cluster when the live set changes.
	resync chan event.TypedGenericEvent[*meshv1alpha1.KubernetesCluster]
	// warned is the serial each cluster's near-expiry Event was recorded
	// for.
	warned map[string]string
}

type observedLease struct {
	renew  time.Time
	seenAt time.Time
}

func (l *statusLeader) setup(mgr manager.Manager) error {
	l.resync = make(chan event.TypedGenericEvent[*meshv1alpha1.KubernetesCluster])
	err := builder.ControllerManagedBy(mgr).Named("kubernetes-cluster-status").
		Watches(&meshv1alpha1.KubernetesCluster{}, coalescedUpdates(leaderCoalesce, spentTokenWait)).
		WatchesRawSource(source.Channel(l.resync, &handler.TypedEnqueueRequestForObject[*meshv1alpha1.KubernetesCluster]{})).
		Complete(l)
	if err != nil {
		return fmt.Errorf("failed to set up the KubernetesCluster status controller: %w", err)
	}
	if err := mgr.Add(manager.RunnableFunc(l.sweep)); err != nil {
		return fmt.Errorf("failed to add the replica sweep: %w", err)
	}
	return nil
}

// coalescedUpdates enqueues an updated object d after the update (an
// object already waiting keeps the earlier turn), spent after an update
// that only spent a bootstrap token, and any other event at once.
func coalescedUpdates(d, spent time.Duration) handler.EventHandler {
	return handler.Funcs{
		CreateFunc: func(_ context.Context, e event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			q.Add(requestFor(e.Object))
		},
		UpdateFunc: func(_ context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			if onlySpentToken(e.ObjectOld, e.ObjectNew) {
				q.AddAfter(requestFor(e.ObjectNew), spent)
				return
			}
			q.AddAfter(requestFor(e.ObjectNew), d)
		},
		DeleteFunc: func(_ context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			q.Add(requestFor(e.Object))
		},
		GenericFunc: func(_ context.Context, e event.GenericEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			q.Add(requestFor(e.Object))
		},
	}
}

// onlySpentToken reports whether the change from o to n is a bootstrap
// spending the cluster's token and nothing else the leader reads: the
// bootstrapped mark set or moved, the token's record gone or kept, the
// rest of the annotations, the spec and the status as they were.
func onlySpentToken(o, n client.Object) bool {
	oc, ok1 := o.(*meshv1alpha1.KubernetesCluster)
	nc, ok2 := n.(*meshv1alpha1.KubernetesCluster)
	if !ok1 || !ok2 || oc.Generation != nc.Generation || nc.DeletionTimestamp != nil || !equality.Semantic.DeepEqual(oc.Status, nc.Status) {
		return false
	}
	spentAt := nc.Annotations[meshv1alpha1.BootstrappedAnnotation]
	if spentAt == "" || spentAt == oc.Annotations[meshv1alpha1.BootstrappedAnnotation] {
		return false
	}
	tokenKeys := []string{meshv1alpha1.BootstrappedAnnotation, meshv1alpha1.BootstrapTokenHashAnnotation, meshv1alpha1.BootstrapTokenExpiresAnnotation}
	for k, v := range nc.Annotations {
		if !slices.Contains(tokenKeys, k) && oc.Annotations[k] != v {
			return false
		}
	}
	for k := range oc.Annotations {
		if _, ok := nc.Annotations[k]; !ok && !slices.Contains(tokenKeys, k) {
			return false
		}
	}
	// A token may be spent, never issued, by this change.
	for _, k := range tokenKeys[1:] {
		if v, ok := nc.Annotations[k]; ok && v != oc.Annotations[k] {
			return false
		}
	}
	return true
}

func requestFor(o client.Object) reconcile.Request {
	return reconcile.Request{NamespacedName: types.NamespacedName{Namespace: o.GetNamespace(), Name: o.GetName()}}
}

// sweep runs on the leader: every replicaSweep it finds the live replicas
// and removes the entries of the others.
func (l *statusLeader) sweep(ctx context.Context) error {
	t := l.clock.NewTicker(replicaSweep)
	defer t.Stop()
	for {
		if err := l.sweepOnce(ctx); err != nil && ctx.Err() == nil {
			l.log.Error(err, "failed to clean up after relay-server replicas that are gone")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C():
		}
	}
}

// sweepOnce finds the live replicas, deletes the Leases of the others
// (each only if it has not been renewed since it was read), then removes
// the entries of every replica that is not live. When a replica comes or
// goes, or another process of it takes its Lease, every cluster is derived
// again.
func (l *statusLeader) sweepOnce(ctx context.Context) error {
	var leases coordinationv1.LeaseList
	if err := l.api.List(ctx, &leases, client.InNamespace(l.ns), client.HasLabels{replicaLeaseLabel}); err != nil {
		return fmt.Errorf("failed to list the replica Leases: %w", err)
	}
	now := l.clock.Now()
	live := map[string]time.Time{}
	seen := map[string]bool{}
	for i := range leases.Items {
		lease := &leases.Items[i]
		replica := strings.TrimPrefix(lease.Name, replicaLeasePrefix)
		seen[lease.Name] = true
		if l.leaseLive(lease, now) {
			live[replica] = acquiredAt(lease)
			continue
		}
		err := l.client.Delete(ctx, lease, client.Preconditions{UID: &lease.UID, ResourceVersion: &lease.ResourceVersion})
		switch {
		case apierrors.IsConflict(err):
			// Renewed since it was read; the next sweep reads which
			// process holds it.
			live[replica] = acquiredAt(lease)
		case client.IgnoreNotFound(err) != nil:
			return fmt.Errorf("failed to delete the expired Lease %s: %w", lease.Name, err)
		default:
			l.log.Info("a relay-server replica stopped renewing its Lease: removing its status entries", "replica", replica)
		}
	}
	l.mu.Lock()
	for name := range l.observed {
		if !seen[name] {
			delete(l.observed, name)
		}
	}
	l.mu.Unlock()

	// The cache's own objects, not copies: a sweep every few seconds
	// would otherwise copy every cluster. Only a cluster with an entry to
	// remove is copied, before anything changes it.
	var clusters meshv1alpha1.KubernetesClusterList
	if err := l.client.List(ctx, &clusters, client.InNamespace(l.ns), client.UnsafeDisableDeepCopy); err != nil {
		return fmt.Errorf("failed to list KubernetesClusters: %w", err)
	}
	for i := range clusters.Items {
		kc := &clusters.Items[i]
		if !slices.ContainsFunc(kc.Status.Replicas, func(r meshv1alpha1.ReplicaStatus) bool { _, ok := live[r.Replica]; return !ok }) {
			continue
		}
		kc = kc.DeepCopy()
		for _, r := range slices.Clone(kc.Status.Replicas) {
			if _, ok := live[r.Replica]; ok {
				continue
			}
			if err := removeEntry(ctx, l.client, kc, r.Replica, leaderFieldManager); err != nil {
				return err
			}
			// The next entry's index is the one the patch left.
			kc.Status.Replicas = slices.DeleteFunc(kc.Status.Replicas, func(e meshv1alpha1.ReplicaStatus) bool { return e.Replica == r.Replica })
			l.log.Info("removed the status entry of a relay-server replica that is gone", "cluster", kc.Name, "replica", r.Replica)
		}
	}
	l.mu.Lock()
	changed := l.live == nil || !maps.EqualFunc(l.live, live, time.Time.Equal)
	l.live = live
	l.mu.Unlock()
	if changed {
		for i := range clusters.Items {
			// The request names the cluster; the cached object is not handed on.
			kc := &meshv1alpha1.KubernetesCluster{ObjectMeta: metav1.ObjectMeta{Namespace: clusters.Items[i].Namespace, Name: clusters.Items[i].Name}}
			select {
			case l.resync <- event.TypedGenericEvent[*meshv1alpha1.KubernetesCluster]{Object: kc}:
			case <-ctx.Done():
				return nil
			}
		}
	}
	return nil
}

// leaseLive reports whether lease was renewed within its duration, as this
// leader has watched it: a renewal time it has not seen before counts from
// now.
func (l *statusLeader) leaseLive(lease *coordinationv1.Lease, now time.Time) bool {
	if lease.Spec.RenewTime == nil || lease.Spec.LeaseDurationSeconds == nil {
		return false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.observed == nil {
		l.observed = map[string]observedLease{}
	}
	o, ok := l.observed[lease.Name]
	if !ok || !o.renew.Equal(lease.Spec.RenewTime.Time) {
		o = observedLease{renew: lease.Spec.RenewTime.Time, seenAt: now}
		l.observed[lease.Name] = o
	}
	return now.Sub(o.seenAt) < time.Duration(*lease.Spec.LeaseDurationSeconds)*time.Second
}

// acquiredAt is when the process that holds lease took it, zero when the
// Lease does not say.
func acquiredAt(lease *coordinationv1.Lease) time.Time {
	if lease.Spec.AcquireTime == nil {
		return time.Time{}
	}
	return lease.Spec.AcquireTime.Time
}

// current reports whether entry r is of the process that holds a live
// replica's Lease (or of one that took it since the last sweep). Before
// the first sweep, as on a leader that has just started, every entry
// counts; the first sweep, at once, derives every cluster again.
func (l *statusLeader) current(r meshv1alpha1.ReplicaStatus) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.live == nil {
		return true
	}
	acquired, ok := l.live[r.Replica]
	return ok && !ofEarlierProcess(r, acquired)
}

// Reconcile derives kc's status from its live replicas' entries.
func (l *statusLeader) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	var kc meshv1alpha1.KubernetesCluster
	err := l.client.Get(ctx, req.NamespacedName, &kc)
	if apierrors.IsNotFound(err) {
		l.mu.Lock()
		delete(l.warned, req.Name)
		l.mu.Unlock()
		return reconcile.Result{}, nil
	}
	if err != nil || kc.DeletionTimestamp != nil {
		return reconcile.Result{}, err
	}
	now := l.clock.Now()
	want := deriveStatus(&kc, l.current, now)
	if l.expiringSoon(&kc, want.ClientCertificate, now) {
		l.events.expiring(&kc, want.ClientCertificate, now)
	}
	if !statusEqual(&kc.Status, want) {
		// The replicas' entries are theirs: the leader's apply holds
		// only the fields it derives.
		derived := *want
		derived.Replicas = nil
		err = l.applier.applyStatus(ctx, kc.Name, leaderFieldManager, &derived)
		if client.IgnoreNotFound(err) != nil {
			return reconcile.Result{}, fmt.Errorf("failed to apply the status of KubernetesCluster %s: %w", kc.Name, err)
		}
	}
	return reconcile.Result{RequeueAfter: nextLook(want.ClientCertificate, now)}, nil
}

// expiringSoon reports whether cert has less than a third of its lifetime
// left and no Event has been recorded for it yet by this leader.
func (l *statusLeader) expiringSoon(kc *meshv1alpha1.KubernetesCluster, cert *meshv1alpha1.CertificateSummary, now time.Time) bool {
	if cert == nil || !now.Before(cert.NotAfter.Time) || now.Before(thirdLeft(cert)) {
		return false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.warned == nil {
		l.warned = map[string]string{}
	}
	if l.warned[kc.Name] == cert.Serial {
		return false
	}
	l.warned[kc.Name] = cert.Serial
	return true
}

// registeredDesc is 1 per KubernetesCluster, from every replica: the
// disconnected-cluster alert compares it with the stream gauges summed
// over replicas.
var registeredDesc = prometheus.NewDesc("relay_cluster_registered",
	"1 for each registered cluster (KubernetesCluster), as this replica's cache holds them.", []string{"cluster"}, nil)

// registeredCollector collects relay_cluster_registered from the cache.
type registeredCollector struct {
	reader client.Reader
	ns     string
}

func (c *registeredCollector) Describe(ch chan<- *prometheus.Desc) { ch <- registeredDesc }

func (c *registeredCollector) Collect(ch chan<- prometheus.Metric) {
	if c.reader == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var list meshv1alpha1.KubernetesClusterList
	if err := c.reader.List(ctx, &list, client.InNamespace(c.ns), client.UnsafeDisableDeepCopy); err != nil {
		return
	}
	for i := range list.Items {
		ch <- prometheus.MustNewConstMetric(registeredDesc, prometheus.GaugeValue, 1, list.Items[i].Name)
	}
}

// setupStatus adds the status writer (every replica) and the status
// leader to mgr.
func (s *Server) setupStatus(mgr manager.Manager) error {
	c, err := statusClient(mgr)
	if err != nil {
		return err
	}
	a, err := newRawClusters(statusConfig(mgr), mgr.GetHTTPClient(), mgr.GetScheme(), s.cfg.Namespace)
	if err != nil {
		return err
	}
	w := s.svc.status
	w.client, w.api, w.applier = c, mgr.GetAPIReader(), a
	if err := mgr.Add(everyreplica.Runnable(func(ctx context.Context) error { return w.run(ctx, s.opts.Clock) })); err != nil {
		return fmt.Errorf("failed to add the KubernetesCluster status writer: %w", err)
	}
	s.registered.reader = mgr.GetClient()
	l := &statusLeader{ns: s.cfg.Namespace, client: c, api: mgr.GetAPIReader(), applier: a, events: s.svc.events, clock: s.opts.Clock, log: s.log.WithName("status")}
	return l.setup(mgr)
}

// The status writes have a client of their own, reading from the
// manager's cache, with a rate limit of its own: a storm of stream changes
// (every agent reconnecting) queues status writes, never the reads and
// writes a bootstrap makes. The applies of status (rawClusters) are
// limited to statusQPS together, the rest of the status client's requests
// (Leases, removals of entries) to statusQPS for each kind.
const (
	statusQPS   = 20
	statusBurst = 40
)

// statusConfig is the manager's configuration with the status writes'
// rate limit.
func statusConfig(mgr manager.Manager) *rest.Config {
	cfg := rest.CopyConfig(mgr.GetConfig())
	cfg.QPS, cfg.Burst, cfg.RateLimiter = statusQPS, statusBurst, nil
	return cfg
}

func statusClient(mgr manager.Manager) (client.Client, error) {
	c, err := client.New(statusConfig(mgr), client.Options{Scheme: mgr.GetScheme(), Mapper: mgr.GetRESTMapper(), Cache: &client.CacheOptions{Reader: mgr.GetCache()}})
	if err != nil {
		return nil, fmt.Errorf("failed to build the status client: %w", err)
	}
	return c, nil
}

var _ reconcile.Reconciler = (*statusLeader)(nil)
