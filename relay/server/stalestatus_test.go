package server

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshrelay/meshrelay/internal/testenv"
	meshv1alpha1 "github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
)

// TestRestartedReplicaWritesOverItsAgentsEntriesAndRemovesTheRest runs a
// replica's status writer against a real API server where a previous
// process under the same name left entries: the entry of a cluster whose
// agent is back is written over at once, and the others are removed only
// after the grace, one by one through the queue, while the Lease is kept.
func TestRestartedReplicaWritesOverItsAgentsEntriesAndRemovesTheRest(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Names: []string{"mgmt"}})
	c := env.Clusters[0]
	ctx := t.Context()
	const ns, replica, grace = "gloo-mesh", "relay-server-a", 8 * time.Second
	if err := c.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	gone := []string{"gone-1", "gone-2", "gone-3", "gone-4", "gone-5"}
	for _, name := range append([]string{"back"}, gone...) {
		if err := c.Client.Create(ctx, &meshv1alpha1.KubernetesCluster{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}); err != nil {
			t.Fatal(err)
		}
		// What the previous process wrote before it crashed.
		stale := clusterApply(ns, name)
		stale.Object["status"] = map[string]any{"replicas": []any{map[string]any{"replica": replica, "pushStreams": int64(1), "pullStreams": int64(1)}}}
		if err := c.Client.Status().Apply(ctx, client.ApplyConfigurationFromUnstructured(stale), client.FieldOwner(replicaFieldManager(replica)), client.ForceOwnership); err != nil {
			t.Fatal(err)
		}
	}
	entry := func(name string) (*meshv1alpha1.ReplicaStatus, error) {
		var kc meshv1alpha1.KubernetesCluster
		if err := c.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, &kc); err != nil {
			return nil, err
		}
		for i := range kc.Status.Replicas {
			if kc.Status.Replicas[i].Replica == replica {
				return &kc.Status.Replicas[i], nil
			}
		}
		return nil, nil
	}

	conns := newConnections()
	// The agent of "back" reconnected to the new process: a Connect
	// stream, one push and one pull.
	conns.open("back", connectStream, nil, nil)
	w := newStatusWriter(replica, ns, conns, time.Now, testr.New(t))
	w.client, w.api, w.staleGrace = c.Client, c.Client, grace
	w.applier = rawClustersOf(t, c, ns)
	conns.onChange = w.changed
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	started := time.Now()
	go func() { done <- w.run(runCtx, clock.RealClock{}) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	})

	testenv.Eventually(t, "the entry of the cluster whose agent is back is written over", 20*time.Second, func() error {
		e, err := entry("back")
		if err != nil || e == nil || e.LastSeen == nil {
			return fmt.Errorf("entry %+v, %v: want the new process's, with lastSeen", e, err)
		}
		return nil
	})
	if since := time.Since(started); since < grace-2*time.Second {
		for _, name := range gone {
			if e, err := entry(name); err != nil || e == nil {
				t.Errorf("%s: entry %+v, %v %s after the start: removed before the grace of %s", name, e, err, since.Round(time.Millisecond), grace)
			}
		}
	} else {
		t.Logf("the machine is slow: the first write took %s, past the grace; not checking that the stale entries waited for it", since)
	}
	testenv.Eventually(t, "the entries of the clusters whose agents are not back are removed", grace+30*time.Second, func() error {
		for _, name := range gone {
			if e, err := entry(name); err != nil || e != nil {
				return fmt.Errorf("%s: entry %+v, %v", name, e, err)
			}
		}
		return nil
	})
	if e, err := entry("back"); err != nil || e == nil || e.PushStreams != 1 || e.PullStreams != 1 {
		t.Errorf("back: entry %+v, %v; want the new process's, one push and one pull stream", e, err)
	}
	var lease coordinationv1.Lease
	if err := c.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: replicaLeasePrefix + replica}, &lease); err != nil {
		t.Fatalf("the replica's Lease: %v", err)
	}
	if lease.Spec.RenewTime == nil || !lease.Spec.RenewTime.Time.After(started.Add(grace/2)) {
		t.Errorf("the Lease was last renewed at %v: not kept while the stale entries waited", lease.Spec.RenewTime)
	}
}

// TestRestartedReplicasPreviousProcessDoesNotKeepAClusterConnected runs
// two replicas against a real API server. relay-server-a holds a cluster's
// streams, then restarts under the same name (a container restart: its
// entry and its Lease left as they were) while the agent stays away. The
// entry stays until the agent is back or the grace is over, but the
// leader no longer counts its streams once the new process holds the
// Lease; the agent coming back to the new process connects the cluster
// again.
func TestRestartedReplicasPreviousProcessDoesNotKeepAClusterConnected(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Names: []string{"mgmt"}})
	c := env.Clusters[0]
	ctx := t.Context()
	const ns, cluster = "gloo-mesh", "cluster-1"
	if err := c.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	// relay-server-b starts first and leads throughout.
	startReplica(t, c, ns, "relay-server-b")
	a := startReplica(t, c, ns, "relay-server-a")
	a.register(cluster)
	cert, _ := a.bootstrap(a.dial(nil), cluster, a.token())

	key := types.NamespacedName{Namespace: ns, Name: cluster}
	waitFor := func(what string, within time.Duration, check func(kc *meshv1alpha1.KubernetesCluster) error) {
		t.Helper()
		testenv.Eventually(t, what, within, func() error {
			var kc meshv1alpha1.KubernetesCluster
			if err := c.Client.Get(ctx, key, &kc); err != nil {
				return err
			}
			return check(&kc)
		})
	}
	connectedThroughA := func(kc *meshv1alpha1.KubernetesCluster) error {
		cond := meta.FindStatusCondition(kc.Status.Conditions, meshv1alpha1.ConditionConnected)
		if cond == nil || cond.Status != metav1.ConditionTrue || kc.Status.ConnectedReplicas != "relay-server-a" {
			return fmt.Errorf("Connected %+v, connectedReplicas %q; want True through relay-server-a; replicas %+v", cond, kc.Status.ConnectedReplicas, kc.Status.Replicas)
		}
		return nil
	}
	agent := holdStreams(t, a.relayFixture, "agent-1", cert)
	waitFor("the cluster is Connected through relay-server-a", 30*time.Second, connectedThroughA)

	// What the first process leaves when its container dies: its entry,
	// as it wrote it, and its Lease, still live. Its graceful stop here
	// deletes both; they are put back as a crash leaves them.
	var lease coordinationv1.Lease
	leaseKey := types.NamespacedName{Namespace: ns, Name: replicaLeasePrefix + "relay-server-a"}
	if err := c.Client.Get(ctx, leaseKey, &lease); err != nil {
		t.Fatal(err)
	}
	written := clusterApply(ns, cluster)
	if err := c.Client.Get(ctx, key, written); err != nil {
		t.Fatal(err)
	}
	entries, _, _ := unstructured.NestedSlice(written.Object, "status", "replicas")
	var entry map[string]any
	for _, e := range entries {
		if m, ok := e.(map[string]any); ok && m["replica"] == "relay-server-a" {
			entry = m
		}
	}
	if entry == nil {
		t.Fatalf("no entry of relay-server-a in %v", entries)
	}
	a.stop()
	<-agent.pull
	crashed := &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: lease.Name, Labels: lease.Labels},
		Spec:       *lease.Spec.DeepCopy(),
	}
	crashed.Spec.RenewTime = &metav1.MicroTime{Time: time.Now()}
	if err := c.Client.Create(ctx, crashed); err != nil {
		t.Fatal(err)
	}
	stale := clusterApply(ns, cluster)
	stale.Object["status"] = map[string]any{"replicas": []any{entry}}
	if err := c.Client.Status().Apply(ctx, client.ApplyConfigurationFromUnstructured(stale), client.FieldOwner(replicaFieldManager("relay-server-a")), client.ForceOwnership); err != nil {
		t.Fatal(err)
	}
	waitFor("the dead process's entry, under its live Lease, still counts", 30*time.Second, connectedThroughA)

	// The new process leaves the entry for ten minutes: only the leader
	// can make the cluster Disconnected before the agent is back.
	a = startReplica(t, c, ns, "relay-server-a", func(s *Server) { s.svc.status.staleGrace = 10 * time.Minute })
	waitFor("the cluster is Disconnected though the previous process's entry is kept", 20*time.Second, func(kc *meshv1alpha1.KubernetesCluster) error {
		cond := meta.FindStatusCondition(kc.Status.Conditions, meshv1alpha1.ConditionConnected)
		if cond == nil || cond.Status != metav1.ConditionFalse || kc.Status.ConnectedReplicas != "" {
			return fmt.Errorf("Connected %+v, connectedReplicas %q; want False", cond, kc.Status.ConnectedReplicas)
		}
		if len(kc.Status.Replicas) != 1 || kc.Status.Replicas[0].Replica != "relay-server-a" || kc.Status.Replicas[0].PushStreams != 1 || kc.Status.Replicas[0].PullStreams != 1 {
			return fmt.Errorf("replicas %+v, want the previous process's entry of relay-server-a, kept for the agent to write over", kc.Status.Replicas)
		}
		return nil
	})

	holdStreams(t, a.relayFixture, "agent-1", cert)
	waitFor("the agent back on the new process connects the cluster again", 30*time.Second, connectedThroughA)
	var kc meshv1alpha1.KubernetesCluster
	if err := c.Client.Get(ctx, key, &kc); err != nil {
		t.Fatal(err)
	}
	first := crashed.Spec.AcquireTime
	if err := c.Client.Get(ctx, leaseKey, &lease); err != nil {
		t.Fatal(err)
	}
	if r := kc.Status.Replicas[0]; r.StartedAt == nil || lease.Spec.AcquireTime == nil || !r.StartedAt.Equal(lease.Spec.AcquireTime) || !first.Before(lease.Spec.AcquireTime) {
		t.Errorf("the new process's entry started at %v, its Lease acquired at %v, the previous process's at %v: want the first two the same, after the third", r.StartedAt, lease.Spec.AcquireTime, first)
	}
}

func TestEntriesOfAnEarlierProcessOfTheReplicaAreToldByWhenItStarted(t *testing.T) {
	acquired := time.Date(2026, 11, 28, 12, 0, 0, 700_000_000, time.UTC)
	at := func(d time.Duration) *metav1.MicroTime { return &metav1.MicroTime{Time: acquired.Add(d)} }
	for name, tc := range map[string]struct {
		startedAt *metav1.MicroTime
		acquired  time.Time
		want      bool
	}{
		"the entry of the process that holds the Lease is its own":                               {at(0), acquired, false},
		"an entry of the previous process is earlier":                                            {at(-time.Minute), acquired, true},
		"an entry of the previous process started in the same second as the new one is earlier":  {at(-600 * time.Millisecond), acquired, true},
		"an entry of the previous process a microsecond before the new one is earlier":           {at(-time.Microsecond), acquired, true},
		"an entry of a process that took the Lease since the leader read it is not":              {at(3 * time.Second), acquired, false},
		"an entry of a relay-server that does not record startedAt is judged by the Lease alone": {nil, acquired, false},
		"every entry of a replica whose Lease has no acquireTime is judged by the Lease alone":   {at(-time.Minute), time.Time{}, false},
	} {
		r := meshv1alpha1.ReplicaStatus{Replica: "relay-server-a", PushStreams: 1, PullStreams: 1, StartedAt: tc.startedAt}
		if got := ofEarlierProcess(r, tc.acquired); got != tc.want {
			t.Errorf("%s: ofEarlierProcess = %v, want %v", name, got, tc.want)
		}
	}
}
