package server

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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
