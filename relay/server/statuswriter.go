package server

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"sync"
	"time"

	"github.com/go-logr/logr"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

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
// is renewed. When it is not, the leader deletes the Lease and then removes
// the replica's entries.
const (
	// replicaLeasePrefix names each replica's Lease.
	replicaLeasePrefix = "relay-server-replica-"
	// replicaLeaseLabel marks the replica Leases, for the leader to list.
	replicaLeaseLabel = meshv1alpha1.ReplicaLeaseLabel
	// replicaLeaseDuration is how long a replica's Lease holds without a
	// renewal; it is renewed every replicaLeaseRenew.
	replicaLeaseDuration = 20 * time.Second
	replicaLeaseRenew    = 5 * time.Second
	// leaderFieldManager owns the fields the leader derives.
	leaderFieldManager = "relay-server"
	// statusCoalesce delays a replica's write after a change, so that a
	// push and a pull stream opening together make one write.
	statusCoalesce = 100 * time.Millisecond
	// statusMinInterval is the least time between two writes of one
	// cluster's entry by one replica: an agent that opens and closes
	// streams in a loop costs a write every statusMinInterval at most,
	// the last state always written.
	statusMinInterval = 2 * time.Second
	// statusWorkers write replica entries concurrently.
	statusWorkers = 4
	// staleEntryGrace is how long after its start a replica leaves the
	// status entries a previous process under its name left: the agents
	// that process held reconnect within it (all of 10,000 within 30 s,
	// see make bench), and their entries are written over, not removed
	// and written again.
	staleEntryGrace = 30 * time.Second
)

// replicaFieldManager is the field manager of replica's status entries.
func replicaFieldManager(replica string) string { return "relay-server-replica/" + replica }

// statusWriter writes this replica's entry of each KubernetesCluster's
// status. A nil *statusWriter writes nothing (tests that build a service
// alone).
type statusWriter struct {
	replica, ns string
	conns       *connections
	// client writes (its own rate limit) and reads from the cache; api
	// reads past it; applier applies entries, at a rate limit of its own
	// of statusQPS that the leader's applies share.
	client  client.Client
	api     client.Reader
	applier *rawClusters
	queue   workqueue.TypedRateLimitingInterface[string]
	now     func() time.Time
	log     logr.Logger
	// written is the entry last applied for each cluster and when, so that
	// an unchanged entry is not applied again and a changing one not more
	// often than statusMinInterval.
	mu      sync.Mutex
	written map[string]writtenEntry
	// staleGrace is staleEntryGrace, shorter in tests.
	staleGrace time.Duration
	// since is when this process began to keep the Lease, to the
	// microsecond (a Lease's acquireTime holds no finer): the Lease's
	// acquireTime and every entry's startedAt, so that the leader tells
	// this process's entries from those a previous process under the same
	// name left. Set by run before the first write.
	since time.Time
}

type writtenEntry struct {
	view replicaView
	at   time.Time
}

func newStatusWriter(replica, ns string, conns *connections, now func() time.Time, log logr.Logger) *statusWriter {
	return &statusWriter{
		replica: replica, ns: ns, conns: conns, now: now, log: log, written: map[string]writtenEntry{}, staleGrace: staleEntryGrace,
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

// run keeps this replica's Lease and writes entries until ctx ends. It
// writes nothing until the Lease exists, so that the leader never sees an
// entry of a replica it cannot tell is live; the Lease's acquireTime and the
// entries' startedAt name this process (since). It then queues, staleGrace
// later, the clusters whose status holds an entry of this replica's name:
// those a process that ran under the same name before it left (a restarted
// container), whose streams the leader no longer counts. By then an entry
// whose agent is back was written over; the others are removed (write). They
// go through the queue, one worker per cluster at a time, at the status
// client's rate, while the Lease is renewed: with thousands of clusters the
// removals take longer than the Lease lives, and the entries of the agents
// coming back do not wait for them.
func (w *statusWriter) run(ctx context.Context, clk clock.WithTicker) error {
	defer w.queue.ShutDown()
	w.since = clk.Now().UTC().Truncate(time.Microsecond)
	lease := &replicaLease{client: w.client, api: w.api, ns: w.ns, replica: w.replica, since: w.since}
	for {
		_, err := lease.renew(ctx, clk.Now())
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
	staleFound := w.findStale(ctx)
	var workers sync.WaitGroup
	for range statusWorkers {
		workers.Go(func() {
			for w.next(ctx) {
			}
		})
	}
	// On the way out: no more writes, then the Lease goes, so that the
	// leader removes this replica's entries at once.
	defer lease.release(w.log)
	defer workers.Wait()
	defer w.queue.ShutDown()
	t := clk.NewTicker(replicaLeaseRenew)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C():
			if !staleFound {
				staleFound = w.findStale(ctx)
			}
			created, err := lease.renew(ctx, clk.Now())
			switch {
			case err != nil && ctx.Err() == nil:
				w.log.Error(err, "failed to renew this replica's Lease: the leader removes this replica's status entries once it expires", "lease", lease.name())
			case created:
				// The leader judged this replica gone and removed its
				// entries: write them all again.
				w.log.Info("this replica's Lease had expired and was removed; writing its status entries again", "lease", lease.name())
				w.rewriteAll()
			}
		}
	}
}

// rewriteAll forgets what was written and queues every cluster this
// replica knows.
func (w *statusWriter) rewriteAll() {
	w.mu.Lock()
	clear(w.written)
	w.mu.Unlock()
	for _, cluster := range w.conns.names() {
		w.queue.Add(cluster)
	}
}

// findStale runs queueStale and reports whether it succeeded; run tries
// again at each renewal of the Lease until it does.
func (w *statusWriter) findStale(ctx context.Context) bool {
	if err := w.queueStale(ctx); err != nil {
		if ctx.Err() == nil {
			w.log.Error(err, "failed to find the status entries a previous process of this replica left; trying again", "retryIn", replicaLeaseRenew)
		}
		return false
	}
	return true
}

// queueStale queues the clusters whose status holds an entry of this
// replica's name, as the API server has them now.
func (w *statusWriter) queueStale(ctx context.Context) error {
	var list meshv1alpha1.KubernetesClusterList
	if err := w.api.List(ctx, &list, client.InNamespace(w.ns)); err != nil {
		return fmt.Errorf("failed to list KubernetesClusters: %w", err)
	}
	n := 0
	for i := range list.Items {
		for _, r := range list.Items[i].Status.Replicas {
			if r.Replica == w.replica {
				w.queue.AddAfter(list.Items[i].Name, w.staleGrace)
				n++
				break
			}
		}
	}
	if n > 0 {
		w.log.Info("status entries of this replica's name found at start: each is written over once its agent is back, or removed", "clusters", n, "removedAfter", w.staleGrace)
	}
	return nil
}

// removeStale removes this replica's entry from cluster's status: this
// replica has no record of the cluster, so the entry is one a previous
// process under its name left.
func (w *statusWriter) removeStale(ctx context.Context, cluster string) error {
	var kc meshv1alpha1.KubernetesCluster
	if err := w.client.Get(ctx, types.NamespacedName{Namespace: w.ns, Name: cluster}, &kc); err != nil {
		return client.IgnoreNotFound(err)
	}
	return removeEntry(ctx, w.client, &kc, w.replica, replicaFieldManager(w.replica))
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

// write applies this replica's entry of cluster's status, unless it is
// unchanged, or was written less than statusMinInterval ago (then it is
// queued for when that time is up). Of a cluster this replica has no record
// of, it removes the entry a previous process under its name left.
func (w *statusWriter) write(ctx context.Context, cluster string) error {
	v := w.conns.entryView(cluster)
	if !v.known {
		return w.removeStale(ctx, cluster)
	}
	now := w.now()
	w.mu.Lock()
	last, ok := w.written[cluster]
	w.mu.Unlock()
	switch {
	case ok && sameView(last.view, v):
		return nil
	case ok && now.Sub(last.at) < statusMinInterval:
		w.queue.AddAfter(cluster, statusMinInterval-now.Sub(last.at))
		return nil
	}
	entry := map[string]any{"replica": w.replica, "pushStreams": int64(v.push), "pullStreams": int64(v.pull)}
	if !w.since.IsZero() {
		entry["startedAt"] = w.since.Format(metav1.RFC3339Micro)
	}
	if v.lastSeen > 0 {
		entry["lastSeen"] = time.Unix(v.lastSeen, 0).UTC().Format(time.RFC3339)
	}
	minimal := maps.Clone(entry)
	if v.agentVersion != "" {
		entry["agentVersion"] = v.agentVersion
	}
	if v.trustBundle != "" {
		entry["trustBundleSHA256"] = v.trustBundle
	}
	if c := v.cert; c != nil {
		entry["clientCertificate"] = certFields(c)
	}
	if c := v.streamCert; c != nil && !sameSummary(c, v.cert) {
		// Written only when it is not clientCertificate: a bootstrap or a
		// renewal whose agent moved its streams writes nothing more.
		entry["streamCertificate"] = certFields(c)
	}
	err := w.apply(ctx, cluster, entry)
	if apierrors.IsInvalid(err) {
		// What the agent reported or its certificate holds did not pass
		// the schema: the streams and times still do.
		w.log.Error(err, "status entry refused by the API server; writing it without the agent's version and certificate", "cluster", cluster)
		err = w.apply(ctx, cluster, minimal)
	}
	if apierrors.IsNotFound(err) {
		w.forget(cluster)
		return nil
	}
	if err != nil {
		return err
	}
	w.mu.Lock()
	w.written[cluster] = writtenEntry{view: v, at: now}
	w.mu.Unlock()
	return nil
}

func (w *statusWriter) apply(ctx context.Context, cluster string, entry map[string]any) error {
	err := w.applier.applyStatus(ctx, cluster, replicaFieldManager(w.replica), map[string]any{"replicas": []any{entry}})
	if err != nil {
		return fmt.Errorf("failed to apply status.replicas[%s] of KubernetesCluster %s: %w", w.replica, cluster, err)
	}
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
	return a.push == b.push && a.pull == b.pull && a.lastSeen == b.lastSeen && a.agentVersion == b.agentVersion && a.trustBundle == b.trustBundle && a.cert == b.cert &&
		sameSummary(a.streamCert, b.streamCert)
}

// sameSummary reports whether a and b describe the same certificate, as
// status would say it: a view's streamCert is made anew at every view.
func sameSummary(a, b *certSummary) bool {
	return a == b || a != nil && b != nil && *a == *b
}

func certFields(c *certSummary) map[string]any {
	f := map[string]any{
		"serial":    c.serial,
		"notBefore": c.notBefore.UTC().Format(time.RFC3339),
		"notAfter":  c.notAfter.UTC().Format(time.RFC3339),
		"issuedAt":  c.issuedAt.UTC().Format(time.RFC3339),
	}
	if c.issuer != "" {
		f["issuer"] = c.issuer
	}
	if c.issuerSHA256 != "" {
		f["issuerSHA256"], f["rootSHA256"] = c.issuerSHA256, c.rootSHA256
	}
	return f
}

// removeEntry removes replica's entry from kc's status, as manager, with a
// JSON patch that first tests the entry is still where kc says it is. A
// patch, not an empty apply: it leaves no managedFields entry behind for
// the replica, whose name (a pod's) changes with every rollout.
func removeEntry(ctx context.Context, c client.Client, kc *meshv1alpha1.KubernetesCluster, replica, manager string) error {
	i := -1
	for j, r := range kc.Status.Replicas {
		if r.Replica == replica {
			i = j
			break
		}
	}
	if i < 0 {
		return nil
	}
	name, err := json.Marshal(replica)
	if err != nil {
		return err
	}
	patch := fmt.Sprintf(`[{"op":"test","path":"/status/replicas/%d/replica","value":%s},{"op":"remove","path":"/status/replicas/%d"}]`, i, name, i)
	err = c.Status().Patch(ctx, kc.DeepCopy(), client.RawPatch(types.JSONPatchType, []byte(patch)), client.FieldOwner(manager))
	if client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("failed to remove the status entry of replica %s from KubernetesCluster %s: %w", replica, kc.Name, err)
	}
	return nil
}

// replicaLease is a replica's own Lease, which says it is live, and which
// process of it holds the Lease: the one that started at acquireTime.
type replicaLease struct {
	client      client.Client
	api         client.Reader
	ns, replica string
	// since is this process's acquireTime.
	since time.Time
}

func (l *replicaLease) name() string { return replicaLeasePrefix + l.replica }

// renew creates the Lease, or renews it at now, with this process's start
// as its acquireTime; created says it did not exist (first start, or the
// leader removed it as expired).
func (l *replicaLease) renew(ctx context.Context, now time.Time) (created bool, err error) {
	var lease coordinationv1.Lease
	err = l.api.Get(ctx, types.NamespacedName{Namespace: l.ns, Name: l.name()}, &lease)
	switch {
	case apierrors.IsNotFound(err):
		lease = coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Namespace: l.ns, Name: l.name(), Labels: map[string]string{replicaLeaseLabel: "true"}},
			Spec: coordinationv1.LeaseSpec{
				HolderIdentity:       ptr.To(l.replica),
				LeaseDurationSeconds: ptr.To(int32(replicaLeaseDuration / time.Second)),
				AcquireTime:          &metav1.MicroTime{Time: l.since},
				RenewTime:            &metav1.MicroTime{Time: now},
			},
		}
		if err := l.client.Create(ctx, &lease); err != nil {
			return false, fmt.Errorf("failed to create Lease %s/%s: %w", l.ns, l.name(), err)
		}
		return true, nil
	case err != nil:
		return false, fmt.Errorf("failed to read Lease %s/%s: %w", l.ns, l.name(), err)
	}
	lease.Spec.HolderIdentity = ptr.To(l.replica)
	lease.Spec.LeaseDurationSeconds = ptr.To(int32(replicaLeaseDuration / time.Second))
	lease.Spec.AcquireTime = &metav1.MicroTime{Time: l.since}
	lease.Spec.RenewTime = &metav1.MicroTime{Time: now}
	if err := l.client.Update(ctx, &lease); err != nil {
		return false, fmt.Errorf("failed to renew Lease %s/%s: %w", l.ns, l.name(), err)
	}
	return false, nil
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
