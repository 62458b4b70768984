package server

import (
	"errors"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/meshrelay/meshrelay/internal/testenv"
	meshv1alpha1 "github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
)

// TestCoalescedUpdatesWaitAndOtherEventsDoNot checks the leader's event
// handler with a real work queue: an update waits, a second update of the
// same object while the first waits makes no second item, and a new, a
// deleted or a resynced object is queued at once.
func TestCoalescedUpdatesWaitAndOtherEventsDoNot(t *testing.T) {
	q := workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[reconcile.Request]())
	defer q.ShutDown()
	kc := func(name string) *meshv1alpha1.KubernetesCluster {
		return &meshv1alpha1.KubernetesCluster{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name}}
	}
	ctx := t.Context()
	long := coalescedUpdates(time.Hour, time.Hour)
	long.Update(ctx, event.UpdateEvent{ObjectOld: kc("a"), ObjectNew: kc("a")}, q)
	if n := q.Len(); n != 0 {
		t.Fatalf("an update was queued at once (%d items): the leader would write once per change", n)
	}
	long.Create(ctx, event.CreateEvent{Object: kc("b")}, q)
	long.Delete(ctx, event.DeleteEvent{Object: kc("c")}, q)
	long.Generic(ctx, event.GenericEvent{Object: kc("d")}, q)
	if n := q.Len(); n != 3 {
		t.Fatalf("%d items after a create, a delete and a resync: want 3, each at once", n)
	}
	for range 3 {
		r, _ := q.Get()
		if r.Name == "a" {
			t.Fatal("the updated object came before its wait")
		}
		q.Done(r)
	}

	short := coalescedUpdates(50*time.Millisecond, time.Hour)
	for range 5 {
		short.Update(ctx, event.UpdateEvent{ObjectOld: kc("e"), ObjectNew: kc("e")}, q)
	}
	testenv.Eventually(t, "the updated object is queued after its wait", 10*time.Second, func() error {
		if q.Len() == 0 {
			return errors.New("not queued yet")
		}
		return nil
	})
	// Let the other waits end too: they must not add a second item.
	time.Sleep(200 * time.Millisecond)
	if n := q.Len(); n != 1 {
		t.Fatalf("%d items after five updates of one object within its wait: want 1", n)
	}
	if r, _ := q.Get(); r.NamespacedName != (types.NamespacedName{Namespace: "ns", Name: "e"}) {
		t.Fatalf("queued %v, want ns/e", r)
	}
}

// TestBootstrapMakesOneWriteOfTheDerivedStatus bootstraps a cluster
// against a real relay-server and API server and watches the
// KubernetesCluster: spending the token and the replica's entry, which
// follows it, come to a single write of the leader's fields, not one each.
func TestBootstrapMakesOneWriteOfTheDerivedStatus(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Names: []string{"mgmt"}})
	c := env.Clusters[0]
	const ns, cluster = "gloo-mesh", "cluster-1"
	ctx := t.Context()
	if err := c.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	a := startReplica(t, c, ns, "relay-server-a")
	a.register(cluster)
	testenv.Eventually(t, "the leader derived the new cluster's status", 30*time.Second, func() error {
		var kc meshv1alpha1.KubernetesCluster
		if err := c.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: cluster}, &kc); err != nil {
			return err
		}
		if meta.FindStatusCondition(kc.Status.Conditions, meshv1alpha1.ConditionRegistered) == nil {
			return errors.New("no Registered condition yet")
		}
		return nil
	})
	wc, ok := c.Client.(client.WithWatch)
	if !ok {
		var err error
		if wc, err = client.NewWithWatch(c.Config, client.Options{Scheme: c.Client.Scheme()}); err != nil {
			t.Fatal(err)
		}
	}
	var list meshv1alpha1.KubernetesClusterList
	w, err := wc.Watch(ctx, &list, client.InNamespace(ns))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	a.bootstrap(a.dial(nil), cluster, a.token())

	var prev *meshv1alpha1.KubernetesClusterStatus
	var spent, entered time.Time
	leaderWrites := 0
	settled := time.After(30 * time.Second)
	var quiet <-chan time.Time
	for done := false; !done; {
		select {
		case ev := <-w.ResultChan():
			kc, ok := ev.Object.(*meshv1alpha1.KubernetesCluster)
			if ev.Type != watch.Added && ev.Type != watch.Modified || !ok || kc.Name != cluster {
				continue
			}
			now := time.Now()
			if spent.IsZero() && kc.Annotations[meshv1alpha1.BootstrappedAnnotation] != "" {
				spent = now
			}
			if entered.IsZero() && len(kc.Status.Replicas) == 1 && kc.Status.Replicas[0].ClientCertificate != nil {
				entered = now
			}
			if prev != nil && !statusEqual(prev, &kc.Status) && !spent.IsZero() {
				leaderWrites++
				t.Logf("leader write %d: %+v", leaderWrites, kc.Status.Conditions)
			}
			prev = kc.Status.DeepCopy()
			if kc.Status.ClientCertificate != nil && meta.IsStatusConditionTrue(kc.Status.Conditions, meshv1alpha1.ConditionCertificateValid) && quiet == nil {
				// Wait past another coalescing window for a late write.
				quiet = time.After(3 * leaderCoalesce)
			}
		case <-quiet:
			done = true
		case <-settled:
			t.Fatalf("the status did not show the certificate within 30s (last %+v)", prev)
		}
	}
	if spent.IsZero() || entered.IsZero() {
		t.Fatalf("watch saw the token spent at %v and the entry at %v: want both", spent, entered)
	}
	if gap := entered.Sub(spent); gap > leaderCoalesce/2 {
		t.Logf("the machine is slow: the entry came %s after the token was spent, near the leader's wait of %s; not counting writes", gap, leaderCoalesce)
		return
	}
	if leaderWrites != 1 {
		t.Errorf("the leader wrote its fields %d times after the bootstrap: want 1, the spent token and the entry together", leaderWrites)
	}
}

func TestOnlySpentTokenTellsASpendFromOtherChanges(t *testing.T) {
	const hash, expires, spent = meshv1alpha1.BootstrapTokenHashAnnotation, meshv1alpha1.BootstrapTokenExpiresAnnotation, meshv1alpha1.BootstrappedAnnotation
	kc := func(gen int64, ann map[string]string) *meshv1alpha1.KubernetesCluster {
		return &meshv1alpha1.KubernetesCluster{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "c", Generation: gen, Annotations: ann}}
	}
	withToken := map[string]string{hash: "h1", expires: "2030-01-01T00:00:00Z", "team": "a"}
	withStatus := kc(1, map[string]string{spent: "2026-01-01T00:00:00Z", "team": "a"})
	withStatus.Status.LastSeen = &metav1.Time{Time: time.Unix(1, 0)}
	for _, c := range []struct {
		name string
		old  *meshv1alpha1.KubernetesCluster
		new  *meshv1alpha1.KubernetesCluster
		want bool
	}{
		{"the cluster's own token spent", kc(1, withToken), kc(1, map[string]string{spent: "2026-01-01T00:00:00Z", "team": "a"}), true},
		{"the shared token marks the cluster bootstrapped", kc(1, nil), kc(1, map[string]string{spent: "2026-01-01T00:00:00Z"}), true},
		{"bootstrapped again later", kc(1, map[string]string{spent: "2026-01-01T00:00:00Z"}), kc(1, map[string]string{spent: "2026-02-01T00:00:00Z"}), true},
		{"a token issued (relayctl register)", kc(1, map[string]string{"team": "a"}), kc(1, withToken), false},
		{"a token replaced", kc(1, withToken), kc(1, map[string]string{hash: "h2", expires: "2030-01-01T00:00:00Z", "team": "a"}), false},
		{"spent, and another annotation changed", kc(1, withToken), kc(1, map[string]string{spent: "2026-01-01T00:00:00Z", "team": "b"}), false},
		{"spent, and another annotation removed", kc(1, withToken), kc(1, map[string]string{spent: "2026-01-01T00:00:00Z"}), false},
		{"spent, and the spec changed", kc(1, withToken), kc(2, map[string]string{spent: "2026-01-01T00:00:00Z", "team": "a"}), false},
		{"spent, and the status changed", kc(1, withToken), withStatus, false},
		{"the mark removed", kc(1, map[string]string{spent: "2026-01-01T00:00:00Z"}), kc(1, nil), false},
		{"nothing the leader reads changed", kc(1, withToken), kc(1, withToken), false},
	} {
		if got := onlySpentToken(c.old, c.new); got != c.want {
			t.Errorf("%s: onlySpentToken = %v, want %v", c.name, got, c.want)
		}
	}
	deleting := kc(1, map[string]string{spent: "2026-01-01T00:00:00Z"})
	deleting.DeletionTimestamp = &metav1.Time{Time: time.Now()}
	if onlySpentToken(kc(1, nil), deleting) {
		t.Error("a cluster being deleted counted as only a spent token")
	}

	// A spend waits the longer wait; an update after it brings the turn
	// forward.
	q := workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[reconcile.Request]())
	defer q.ShutDown()
	h := coalescedUpdates(50*time.Millisecond, time.Hour)
	h.Update(t.Context(), event.UpdateEvent{ObjectOld: kc(1, withToken), ObjectNew: kc(1, map[string]string{spent: "2026-01-01T00:00:00Z", "team": "a"})}, q)
	time.Sleep(200 * time.Millisecond)
	if n := q.Len(); n != 0 {
		t.Fatalf("a spent token was looked at after %s: want the long wait", 200*time.Millisecond)
	}
	h.Update(t.Context(), event.UpdateEvent{ObjectOld: withStatus, ObjectNew: kc(1, map[string]string{spent: "2026-01-01T00:00:00Z", "team": "a"})}, q)
	testenv.Eventually(t, "the entry's change brings the look forward", 10*time.Second, func() error {
		if q.Len() != 1 {
			return errors.New("not queued yet")
		}
		return nil
	})
}
