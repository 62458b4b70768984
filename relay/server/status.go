package server

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	meshv1alpha1 "github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
)

// KubernetesCluster status is written in two layers, so that replicas never
// fight over a field:
//
//   - every replica writes only its own entry of status.replicas (its
//     streams of the cluster, what it last saw of the cluster's certificate
//     and agent), by server-side apply with a field manager of its own
//     (statusWriter);
//   - the leader (Lease relay-server) derives the rest from the entries of
//     live replicas: conditions, newest certificate, agent version, last
//     seen (statusLeader).
//
// A replica is live while its own Lease, relay-server-replica-<replica>,
// is renewed. When it is not, the leader removes the replica's entries by
// applying nothing as that replica's field manager, and deletes the Lease.
const (
	// replicaLeasePrefix names each replica's Lease.
	replicaLeasePrefix = "relay-server-replica-"
	// replicaLeaseLabel marks the replica Leases, for the leader to list.
	replicaLeaseLabel = meshv1alpha1.ReplicaLeaseLabel
	// replicaLeaseDuration is how long a replica's Lease holds without a
	// renewal; it is renewed every replicaLeaseRenew.
	replicaLeaseDuration = 20 * time.Second
	replicaLeaseRenew    = 5 * time.Second
	// replicaSweep is how often the leader looks for replicas that are gone.
	replicaSweep = 5 * time.Second
	// leaderFieldManager owns the fields the leader derives.
	leaderFieldManager = "relay-server"
	// statusCoalesce delays a replica's write after a change, so that a
	// push and a pull stream opening together make one write.
	statusCoalesce = 100 * time.Millisecond
	// statusWorkers write replica entries concurrently.
	statusWorkers = 4
)

// replicaFieldManager is the field manager of replica's status entries.
func replicaFieldManager(replica string) string { return "relay-server-replica/" + replica }

// statusWriter writes this replica's entry of each KubernetesCluster's
// status. A nil *statusWriter writes nothing (tests that build a service
// alone).
type statusWriter struct {
	replica, ns string
	conns       *connections
	client      client.Client
	queue       workqueue.TypedRateLimitingInterface[string]
	log         logr.Logger
	// written is the entry last applied for each cluster, so that an
	// unchanged entry is not applied again.
	mu      sync.Mutex
	written map[string]replicaView
}

func newStatusWriter(replica, ns string, conns *connections, log logr.Logger) *statusWriter {
	return &statusWriter{
		replica: replica, ns: ns, conns: conns, log: log, written: map[string]replicaView{},
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[string](100*time.Millisecond, 30*time.Second),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "relay-server-status"}),
	}
}

// changed asks for cluster's entry to be written.
func (w *statusWriter) changed(cluster string) {
	if w != nil {
		w.queue.AddAfter(cluster, statusCoalesce)
	}
}

// run keeps this replica's Lease and writes entries until ctx ends; it
// writes nothing until the Lease exists, so that the leader never sees an
// entry of a replica it cannot tell is live.
func (w *statusWriter) run(ctx context.Context, clk clock.WithTicker) error {
	lease := &replicaLease{client: w.client, ns: w.ns, replica: w.replica}
	for {
		err := lease.renew(ctx, clk.Now())
		if err == nil {
			break
		}
		w.log.Error(err, "failed to create this replica's Lease; KubernetesCluster status waits for it", "lease", lease.name())
		select {
		case <-ctx.Done():
			return nil
		case <-clk.After(replicaLeaseRenew):
		}
	}
	defer lease.release(w.log)
	go func() {
		<-ctx.Done()
		w.queue.ShutDown()
	}()
	for range statusWorkers {
		go func() {
			for w.next(ctx) {
			}
		}()
	}
	t := clk.NewTicker(replicaLeaseRenew)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C():
			if err := lease.renew(ctx, clk.Now()); err != nil && ctx.Err() == nil {
				w.log.Error(err, "failed to renew this replica's Lease: the leader removes this replica's status entries once it expires", "lease", lease.name())
			}
		}
	}
}

func (w *statusWriter) next(ctx context.Context) bool {
	cluster, shutdown := w.queue.Get()
	if shutdown {
		return false
	}
	defer w.queue.Done(cluster)
	if err := w.write(ctx, cluster); err != nil {
		if ctx.Err() == nil {
			w.log.Error(err, "failed to write this replica's status entry; retrying", "cluster", cluster)
		}
		w.queue.AddRateLimited(cluster)
		return true
	}
	w.queue.Forget(cluster)
	return true
}

// write applies this replica's entry of cluster's status.
func (w *statusWriter) write(ctx context.Context, cluster string) error {
	v := w.conns.view(cluster)
	if !v.known {
		return nil
	}
	w.mu.Lock()
	last, ok := w.written[cluster]
	w.mu.Unlock()
	if ok && sameView(last, v) {
		return nil
	}
	entry := map[string]any{"replica": w.replica, "pushStreams": int64(v.push), "pullStreams": int64(v.pull)}
	if v.lastSeen > 0 {
		entry["lastSeen"] = time.Unix(v.lastSeen, 0).UTC().Format(time.RFC3339)
	}
	if v.agentVersion != "" {
		entry["agentVersion"] = v.agentVersion
	}
	if c := v.cert; c != nil {
		entry["clientCertificate"] = certFields(c)
	}
	u := clusterApply(w.ns, cluster)
	u.Object["status"] = map[string]any{"replicas": []any{entry}}
	err := w.client.Status().Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(replicaFieldManager(w.replica)), client.ForceOwnership)
	if apierrors.IsNotFound(err) {
		w.forget(cluster)
		return nil
	}
	if err != nil {
		return fmt.Errorf("failed to apply status.replicas[%s] of KubernetesCluster %s: %w", w.replica, cluster, err)
	}
	w.mu.Lock()
	w.written[cluster] = v
	w.mu.Unlock()
	return nil
}

// forget drops what was written for cluster, whose registration is gone.
func (w *statusWriter) forget(cluster string) {
	if w == nil {
		return
	}
	w.mu.Lock()
	delete(w.written, cluster)
	w.mu.Unlock()
}

func sameView(a, b replicaView) bool {
	return a.push == b.push && a.pull == b.pull && a.lastSeen == b.lastSeen && a.agentVersion == b.agentVersion && a.cert == b.cert
}

// maxIssuerField bounds status' issuer, a name the issuing CA chose.
const maxIssuerField = 256

func certFields(c *certSummary) map[string]any {
	f := map[string]any{
		"serial":    c.serial,
		"notBefore": c.notBefore.UTC().Format(time.RFC3339),
		"notAfter":  c.notAfter.UTC().Format(time.RFC3339),
		"issuedAt":  c.issuedAt.UTC().Format(time.RFC3339),
	}
	if c.issuer != "" {
		f["issuer"] = c.issuer[:min(len(c.issuer), maxIssuerField)]
	}
	return f
}

// clusterApply is the start of an apply configuration of a KubernetesCluster.
func clusterApply(ns, name string) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": meshv1alpha1.GroupVersion.String(),
		"kind":       "KubernetesCluster",
		"metadata":   map[string]any{"name": name, "namespace": ns},
	}}
}

// replicaLease is a replica's own Lease, which says it is live.
type replicaLease struct {
	client      client.Client
	ns, replica string
}

func (l *replicaLease) name() string { return replicaLeasePrefix + l.replica }

// renew creates or renews the Lease at now.
func (l *replicaLease) renew(ctx context.Context, now time.Time) error {
	lease := &coordinationv1.Lease{
		TypeMeta:   metav1.TypeMeta{APIVersion: "coordination.k8s.io/v1", Kind: "Lease"},
		ObjectMeta: metav1.ObjectMeta{Namespace: l.ns, Name: l.name(), Labels: map[string]string{replicaLeaseLabel: "true"}},
		Spec: coordinationv1.LeaseSpec{
			HolderIdentity:       ptr.To(l.replica),
			LeaseDurationSeconds: ptr.To(int32(replicaLeaseDuration / time.Second)),
			RenewTime:            &metav1.MicroTime{Time: now},
		},
	}
	u, err := toUnstructured(lease)
	if err != nil {
		return err
	}
	if err := l.client.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(replicaFieldManager(l.replica)), client.ForceOwnership); err != nil {
		return fmt.Errorf("failed to apply Lease %s/%s: %w", l.ns, l.name(), err)
	}
	return nil
}

// release deletes the Lease of a replica that stops, so that the leader
// removes its entries at once rather than when the Lease expires.
func (l *replicaLease) release(log logr.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	lease := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: l.ns, Name: l.name()}}
	if err := l.client.Delete(ctx, lease); client.IgnoreNotFound(err) != nil {
		log.Error(err, "failed to delete this replica's Lease as it stops; the leader cleans up when it expires", "lease", l.name())
	}
}

func toUnstructured(obj any) (*unstructured.Unstructured, error) {
	m, err := runtimeToMap(obj)
	if err != nil {
		return nil, err
	}
	return &unstructured.Unstructured{Object: m}, nil
}

// statusLeader derives each KubernetesCluster's conditions and summary
// from the entries of live replicas, records the near-expiry Event, and
// removes the entries of replicas that are gone. It runs on the leader.
type statusLeader struct {
	ns     string
	client client.Client
	api    client.Reader
	events *clusterEvents
	clock  clock.WithTicker
	log    logr.Logger
	// live is the set of live replicas at the last sweep; nil before it.
	mu   sync.Mutex
	live map[string]bool
	// resync enqueues every cluster when the live set changes.
	resync chan event.TypedGenericEvent[*meshv1alpha1.KubernetesCluster]
	// warned is the serial each cluster's near-expiry Event was recorded
	// for.
	warned map[string]string
}

func (l *statusLeader) setup(mgr manager.Manager) error {
	l.resync = make(chan event.TypedGenericEvent[*meshv1alpha1.KubernetesCluster], 1024)
	err := builder.ControllerManagedBy(mgr).Named("kubernetes-cluster-status").
		For(&meshv1alpha1.KubernetesCluster{}).
		WatchesRawSource(source.Channel(l.resync, &handler.TypedEnqueueRequestForObject[*meshv1alpha1.KubernetesCluster]{})).
		Complete(l)
	if err != nil {
		return fmt.Errorf("failed to set up the KubernetesCluster status controller: %w", err)
	}
	return mgr.Add(manager.RunnableFunc(l.sweep))
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

func (l *statusLeader) sweepOnce(ctx context.Context) error {
	var leases coordinationv1.LeaseList
	if err := l.api.List(ctx, &leases, client.InNamespace(l.ns), client.HasLabels{replicaLeaseLabel}); err != nil {
		return fmt.Errorf("failed to list the replica Leases: %w", err)
	}
	now := l.clock.Now()
	live := map[string]bool{}
	var expired []coordinationv1.Lease
	for _, lease := range leases.Items {
		replica := strings.TrimPrefix(lease.Name, replicaLeasePrefix)
		if leaseLive(&lease, now) {
			live[replica] = true
		} else {
			expired = append(expired, lease)
		}
	}
	var clusters meshv1alpha1.KubernetesClusterList
	if err := l.client.List(ctx, &clusters, client.InNamespace(l.ns)); err != nil {
		return fmt.Errorf("failed to list KubernetesClusters: %w", err)
	}
	for _, kc := range clusters.Items {
		for _, r := range kc.Status.Replicas {
			if live[r.Replica] {
				continue
			}
			u := clusterApply(l.ns, kc.Name)
			u.Object["status"] = map[string]any{}
			err := l.client.Status().Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(replicaFieldManager(r.Replica)), client.ForceOwnership)
			if client.IgnoreNotFound(err) != nil {
				return fmt.Errorf("failed to remove the entry of replica %s from KubernetesCluster %s: %w", r.Replica, kc.Name, err)
			}
			l.log.Info("removed the status entry of a relay-server replica that is gone", "cluster", kc.Name, "replica", r.Replica)
		}
	}
	for i := range expired {
		if err := l.client.Delete(ctx, &expired[i], client.Preconditions{ResourceVersion: &expired[i].ResourceVersion}); client.IgnoreNotFound(err) != nil && !apierrors.IsConflict(err) {
			return fmt.Errorf("failed to delete the expired Lease %s: %w", expired[i].Name, err)
		}
	}
	l.mu.Lock()
	changed := !mapsEqual(l.live, live)
	l.live = live
	l.mu.Unlock()
	if changed {
		for i := range clusters.Items {
			select {
			case l.resync <- event.TypedGenericEvent[*meshv1alpha1.KubernetesCluster]{Object: &clusters.Items[i]}:
			default:
			}
		}
	}
	return nil
}

func mapsEqual(a, b map[string]bool) bool {
	if a == nil || len(a) != len(b) {
		return false
	}
	for k := range a {
		if !b[k] {
			return false
		}
	}
	return true
}

// leaseLive reports whether lease was renewed within its duration at now.
func leaseLive(lease *coordinationv1.Lease, now time.Time) bool {
	if lease.Spec.RenewTime == nil || lease.Spec.LeaseDurationSeconds == nil {
		return false
	}
	return now.Before(lease.Spec.RenewTime.Add(time.Duration(*lease.Spec.LeaseDurationSeconds) * time.Second))
}

// isLive reports whether replica is live; before the first sweep every
// replica with an entry counts.
func (l *statusLeader) isLive(replica string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.live == nil || l.live[replica]
}

// Reconcile derives kc's status from its live replicas' entries.
func (l *statusLeader) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	var kc meshv1alpha1.KubernetesCluster
	if err := l.client.Get(ctx, req.NamespacedName, &kc); err != nil || kc.DeletionTimestamp != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	now := l.clock.Now()
	want := deriveStatus(&kc, l.isLive, now)
	if l.expiringSoon(&kc, want.ClientCertificate, now) {
		l.events.expiring(&kc, want.ClientCertificate, now)
	}
	if !statusEqual(&kc.Status, want) {
		u := clusterApply(l.ns, kc.Name)
		m, err := runtimeToMap(want)
		if err != nil {
			return reconcile.Result{}, err
		}
		delete(m, "replicas")
		u.Object["status"] = m
		err = l.client.Status().Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(leaderFieldManager), client.ForceOwnership)
		if err != nil {
			return reconcile.Result{}, client.IgnoreNotFound(err)
		}
	}
	return reconcile.Result{RequeueAfter: nextLook(want.ClientCertificate, now)}, nil
}

// expiringSoon reports whether cert has less than a third of its lifetime
// left and no Event has been recorded for it yet.
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

// thirdLeft is when a third of cert's lifetime is left.
func thirdLeft(cert *meshv1alpha1.CertificateSummary) time.Time {
	life := cert.NotAfter.Sub(cert.NotBefore.Time)
	return cert.NotAfter.Add(-life / 3)
}

// nextLook is when the leader looks at a cluster again without a change:
// when its certificate reaches a third of its lifetime left, or expires.
func nextLook(cert *meshv1alpha1.CertificateSummary, now time.Time) time.Duration {
	if cert == nil {
		return 0
	}
	for _, at := range []time.Time{thirdLeft(cert), cert.NotAfter.Time} {
		if at.After(now) {
			return min(at.Sub(now)+time.Second, time.Hour)
		}
	}
	return 0
}

// deriveStatus is kc's status as the leader derives it at now from the
// entries of replicas live says are live.
func deriveStatus(kc *meshv1alpha1.KubernetesCluster, live func(string) bool, now time.Time) *meshv1alpha1.KubernetesClusterStatus {
	st := &meshv1alpha1.KubernetesClusterStatus{
		ObservedGeneration: kc.Generation,
		Replicas:           kc.Status.Replicas,
		Conditions:         slices.Clone(kc.Status.Conditions),
		ClientCertificate:  kc.Status.ClientCertificate,
		AgentVersion:       kc.Status.AgentVersion,
		LastSeen:           kc.Status.LastSeen,
	}
	var holders []string
	var newestSeen *metav1.Time
	// The entry seen last comes last, so that of two certificates issued
	// in the same second, the one seen last is taken (newerCert).
	entries := slices.Clone(kc.Status.Replicas)
	slices.SortStableFunc(entries, func(a, b meshv1alpha1.ReplicaStatus) int {
		return seenTime(a).Compare(seenTime(b))
	})
	for _, r := range entries {
		if c := r.ClientCertificate; c != nil && newerCert(c, st.ClientCertificate) {
			st.ClientCertificate = c.DeepCopy()
		}
		if r.LastSeen != nil && (st.LastSeen == nil || r.LastSeen.After(st.LastSeen.Time)) {
			st.LastSeen = r.LastSeen.DeepCopy()
		}
		if r.LastSeen != nil && r.AgentVersion != "" && (newestSeen == nil || r.LastSeen.After(newestSeen.Time)) {
			newestSeen, st.AgentVersion = r.LastSeen, r.AgentVersion
		}
		if live(r.Replica) && r.PushStreams > 0 && r.PullStreams > 0 {
			holders = append(holders, r.Replica)
		}
	}
	if c := st.ClientCertificate; c != nil {
		st.ClientCertificateNotAfter = c.NotAfter.DeepCopy()
	}
	slices.Sort(holders)
	st.ConnectedReplicas = joinBounded(holders, maxConnectedReplicas)
	meta.SetStatusCondition(&st.Conditions, registeredCondition(kc, st.ClientCertificate))
	meta.SetStatusCondition(&st.Conditions, connectedCondition(kc, holders, st.LastSeen))
	meta.SetStatusCondition(&st.Conditions, certificateCondition(kc, st.ClientCertificate, len(holders) > 0, now))
	for i := range st.Conditions {
		st.Conditions[i].ObservedGeneration = kc.Generation
	}
	return st
}

func seenTime(r meshv1alpha1.ReplicaStatus) time.Time {
	if r.LastSeen == nil {
		return time.Time{}
	}
	return r.LastSeen.Time
}

// newerCert reports whether a is to replace b as the newest certificate:
// it is not older (validity times have a resolution of one second, so a
// certificate issued in the same second as b replaces it), and another.
func newerCert(a, b *meshv1alpha1.CertificateSummary) bool {
	if b == nil {
		return true
	}
	return a.Serial != b.Serial && !a.NotBefore.Before(&b.NotBefore)
}

func registeredCondition(kc *meshv1alpha1.KubernetesCluster, cert *meshv1alpha1.CertificateSummary) metav1.Condition {
	c := metav1.Condition{Type: meshv1alpha1.ConditionRegistered, Status: metav1.ConditionTrue}
	token, tokenExpires := kc.Annotations[meshv1alpha1.BootstrapTokenHashAnnotation], kc.Annotations[meshv1alpha1.BootstrapTokenExpiresAnnotation]
	switch {
	case token != "":
		c.Reason = "AwaitingBootstrap"
		c.Message = fmt.Sprintf("a bootstrap token for %s is unused (it expires %s): the agent bootstraps with it; relayctl register %s issues a new one", kc.Name, tokenExpires, kc.Name)
	case cert != nil || kc.Annotations[meshv1alpha1.BootstrappedAnnotation] != "":
		c.Reason = "Bootstrapped"
		c.Message = fmt.Sprintf("%s has bootstrapped", kc.Name)
	default:
		c.Reason = "NoToken"
		c.Message = fmt.Sprintf("no bootstrap token and no client certificate seen yet: run relayctl register %s, or give the agent a client certificate", kc.Name)
	}
	return c
}

// maxConnectedReplicas bounds status.connectedReplicas.
const maxConnectedReplicas = 1024

// joinBounded joins names with commas, ending with "..." where the next
// name would pass max bytes.
func joinBounded(names []string, max int) string {
	var b strings.Builder
	for i, n := range names {
		sep := ""
		if i > 0 {
			sep = ","
		}
		if b.Len()+len(sep)+len(n) > max-len(",...") {
			b.WriteString(",...")
			break
		}
		b.WriteString(sep + n)
	}
	return b.String()
}

func connectedCondition(kc *meshv1alpha1.KubernetesCluster, holders []string, lastSeen *metav1.Time) metav1.Condition {
	if len(holders) > 0 {
		return metav1.Condition{Type: meshv1alpha1.ConditionConnected, Status: metav1.ConditionTrue, Reason: "StreamsOpen",
			Message: fmt.Sprintf("push and pull streams open on relay-server replica(s) %s", strings.Join(holders, ", "))}
	}
	msg := fmt.Sprintf("no relay-server replica holds both streams of %s: is relay-agent running there, and can it reach relay-server? relayctl check says why", kc.Name)
	if lastSeen != nil {
		msg = fmt.Sprintf("%s (last seen %s)", msg, lastSeen.UTC().Format(time.RFC3339))
	}
	return metav1.Condition{Type: meshv1alpha1.ConditionConnected, Status: metav1.ConditionFalse, Reason: "Disconnected", Message: msg}
}

func certificateCondition(kc *meshv1alpha1.KubernetesCluster, cert *meshv1alpha1.CertificateSummary, connected bool, now time.Time) metav1.Condition {
	c := metav1.Condition{Type: meshv1alpha1.ConditionCertificateValid, Status: metav1.ConditionFalse}
	fix := fmt.Sprintf("relayctl register %s issues a fresh bootstrap token, with which the agent gets a new certificate", kc.Name)
	switch {
	case cert == nil:
		c.Reason, c.Message = "Unknown", "no client certificate of this cluster issued or seen yet"
		c.Status = metav1.ConditionUnknown
	case !now.Before(cert.NotAfter.Time):
		c.Reason, c.Message = "Expired", fmt.Sprintf("client certificate %s expired at %s: %s", cert.Serial, cert.NotAfter.UTC().Format(time.RFC3339), fix)
	case revokedSummary(kc, cert):
		c.Reason, c.Message = "Revoked", fmt.Sprintf("client certificate %s is revoked by spec.revocation: %s", cert.Serial, fix)
	case !now.Before(thirdLeft(cert)) && !connected:
		c.Status = metav1.ConditionTrue
		c.Reason, c.Message = "ExpiringSoon", fmt.Sprintf("client certificate %s expires %s with less than a third of its lifetime left, and the cluster is not connected to renew it", cert.Serial, cert.NotAfter.UTC().Format(time.RFC3339))
	default:
		c.Status = metav1.ConditionTrue
		c.Reason, c.Message = "Valid", fmt.Sprintf("client certificate %s expires %s", cert.Serial, cert.NotAfter.UTC().Format(time.RFC3339))
	}
	return c
}

// revokedSummary reports whether spec.revocation refuses cert.
func revokedSummary(kc *meshv1alpha1.KubernetesCluster, cert *meshv1alpha1.CertificateSummary) bool {
	r := kc.Spec.Revocation
	if r == nil {
		return false
	}
	if slices.Contains(r.Serials, cert.Serial) {
		return true
	}
	issued := cert.NotBefore.Time
	if cert.IssuedAt != nil {
		issued = cert.IssuedAt.Time
	}
	return r.IssuedBefore != nil && issued.Before(r.IssuedBefore.Time)
}

// statusEqual reports whether the leader's fields of a and b agree, with
// condition transition times ignored only where status and reason agree.
func statusEqual(a, b *meshv1alpha1.KubernetesClusterStatus) bool {
	if a.ObservedGeneration != b.ObservedGeneration || a.AgentVersion != b.AgentVersion || a.ConnectedReplicas != b.ConnectedReplicas ||
		!timeEqual(a.LastSeen, b.LastSeen) || !timeEqual(a.ClientCertificateNotAfter, b.ClientCertificateNotAfter) ||
		!certEqual(a.ClientCertificate, b.ClientCertificate) || len(a.Conditions) != len(b.Conditions) {
		return false
	}
	for _, c := range b.Conditions {
		o := meta.FindStatusCondition(a.Conditions, c.Type)
		if o == nil || o.Status != c.Status || o.Reason != c.Reason || o.Message != c.Message || o.ObservedGeneration != c.ObservedGeneration {
			return false
		}
	}
	return true
}

func timeEqual(a, b *metav1.Time) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Equal(b)
}

func certEqual(a, b *meshv1alpha1.CertificateSummary) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Serial == b.Serial && a.NotBefore.Equal(&b.NotBefore) && a.NotAfter.Equal(&b.NotAfter) && a.Issuer == b.Issuer && timeEqual(a.IssuedAt, b.IssuedAt)
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
	w := s.svc.status
	w.client = c
	if err := mgr.Add(onEveryReplica(func(ctx context.Context) error { return w.run(ctx, s.opts.Clock) })); err != nil {
		return fmt.Errorf("failed to add the KubernetesCluster status writer: %w", err)
	}
	s.registered.reader = mgr.GetClient()
	l := &statusLeader{ns: s.cfg.Namespace, client: c, api: mgr.GetAPIReader(), events: s.svc.events, clock: s.opts.Clock, log: s.log.WithName("status")}
	return l.setup(mgr)
}

// The status writes have a client of their own, reading from the
// manager's cache, with a rate limit of its own: a storm of stream changes
// (every agent reconnecting) queues status writes, never the reads and
// writes a bootstrap makes.
const (
	statusQPS   = 20
	statusBurst = 40
)

func statusClient(mgr manager.Manager) (client.Client, error) {
	cfg := rest.CopyConfig(mgr.GetConfig())
	cfg.QPS, cfg.Burst, cfg.RateLimiter = statusQPS, statusBurst, nil
	c, err := client.New(cfg, client.Options{Scheme: mgr.GetScheme(), Mapper: mgr.GetRESTMapper(), Cache: &client.CacheOptions{Reader: mgr.GetCache()}})
	if err != nil {
		return nil, fmt.Errorf("failed to build the status client: %w", err)
	}
	return c, nil
}

var _ reconcile.Reconciler = (*statusLeader)(nil)

func runtimeToMap(obj any) (map[string]any, error) {
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return nil, fmt.Errorf("failed to convert %T: %w", obj, err)
	}
	return m, nil
}
