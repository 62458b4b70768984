package fleet

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshrelay/meshrelay/internal/testenv"
	"github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
	"github.com/meshrelay/meshrelay/pkg/config"
)

// replicaEntry is one replica's entry of a KubernetesCluster's status.
type replicaEntry struct {
	replica    string
	push, pull int64
}

// statusWriter writes KubernetesCluster status the way relay-server does:
// each replica applies its own entry of status.replicas under its own
// field manager, the leader applies the conditions under its own.
type statusWriter struct {
	t  *testing.T
	c  client.Client
	ns string
}

func (w statusWriter) apply(name, manager string, status map[string]any) {
	w.t.Helper()
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": v1alpha1.GroupVersion.String(), "kind": "KubernetesCluster",
		"metadata": map[string]any{"namespace": w.ns, "name": name},
		"status":   status,
	}}
	if err := w.c.Status().Apply(w.t.Context(), client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(manager), client.ForceOwnership); err != nil {
		w.t.Fatalf("failed to apply the status of %s as %s: %v", name, manager, err)
	}
}

// replica applies e as its replica would.
func (w statusWriter) replica(cluster string, e replicaEntry) {
	w.t.Helper()
	w.apply(cluster, "relay-server-replica/"+e.replica, map[string]any{"replicas": []any{map[string]any{
		"replica": e.replica, "pushStreams": e.push, "pullStreams": e.pull, "lastSeen": time.Now().UTC().Format(time.RFC3339),
	}}})
}

// connected applies the Connected condition as the leader would.
func (w statusWriter) connected(cluster string, status metav1.ConditionStatus, reason, message string) {
	w.t.Helper()
	w.apply(cluster, "relay-server", map[string]any{"conditions": []any{map[string]any{
		"type": v1alpha1.ConditionConnected, "status": string(status), "reason": reason, "message": message,
		"lastTransitionTime": time.Now().UTC().Format(time.RFC3339),
	}}})
}

// lease creates or renews replica's Lease, renewed at renewed, as
// relay-server does while the replica runs.
func (w statusWriter) lease(replica string, renewed time.Time) {
	w.t.Helper()
	l := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: w.ns, Name: "relay-server-replica-" + replica, Labels: map[string]string{replicaLeaseLabel: "true"}}}
	if err := w.c.Get(w.t.Context(), client.ObjectKeyFromObject(l), l); client.IgnoreNotFound(err) != nil {
		w.t.Fatal(err)
	}
	l.Spec = coordinationv1.LeaseSpec{HolderIdentity: ptr.To(replica), LeaseDurationSeconds: ptr.To(int32(20)), RenewTime: &metav1.MicroTime{Time: renewed}}
	var err error
	if l.ResourceVersion == "" {
		err = w.c.Create(w.t.Context(), l)
	} else {
		err = w.c.Update(w.t.Context(), l)
	}
	if err != nil {
		w.t.Fatalf("failed to write the Lease of %s: %v", replica, err)
	}
}

// streamsFinding runs Check, reading streams from status, for cluster
// and returns its ClusterStatus, its relay streams finding and the
// management side's relay-server replicas finding.
func streamsFinding(t *testing.T, c client.Client, cluster string) (ClusterStatus, Finding, Finding) {
	t.Helper()
	srv, ag, wh := config.DefaultServer(), config.DefaultAgent(), config.DefaultWebhook()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	r, err := Check(ctx, CheckOptions{
		Server: &srv, Agent: &ag, Webhook: &wh, Mgmt: c, StreamsFrom: StreamsFromStatus, Now: time.Now(),
		Remotes: []Remote{{Context: "mgmt", Name: cluster, Client: c}},
	})
	if err != nil {
		t.Fatal(err)
	}
	var streams, replicas Finding
	for _, f := range r.Findings {
		switch {
		case f.Cluster == cluster && f.Check == "relay streams":
			streams = f
		case f.Cluster == "management" && f.Check == "relay-server replicas":
			replicas = f
		}
	}
	if len(r.Clusters) != 1 {
		t.Fatalf("clusters = %+v, want %s alone", r.Clusters, cluster)
	}
	return r.Clusters[0], streams, replicas
}

// TestCheckReadsStreamsFromStatus writes KubernetesCluster status and the
// replica Leases on a local cluster as relay-server's replicas and leader
// do, and runs check with its default source of streams.
func TestCheckReadsStreamsFromStatus(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Names: []string{"mgmt"}})
	c := env.Clusters[0].Client
	ns := config.DefaultNamespace
	ctx := t.Context()
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	w := statusWriter{t: t, c: c, ns: ns}
	register := func(name string) {
		t.Helper()
		if err := c.Create(ctx, &v1alpha1.KubernetesCluster{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"two-replicas", "no-replica", "no-status", "split", "on-a-stopped-replica"} {
		register(name)
	}
	w.replica("two-replicas", replicaEntry{"relay-server-a", 1, 1})
	w.replica("two-replicas", replicaEntry{"relay-server-b", 1, 1})
	w.replica("two-replicas", replicaEntry{"relay-server-gone", 0, 0})
	w.connected("two-replicas", metav1.ConditionTrue, "StreamsOpen", "push and pull streams open on relay-server replica(s) relay-server-a, relay-server-b")
	disconnected := "no relay-server replica holds both streams of no-replica: is relay-agent running there, and can it reach relay-server? relayctl check says why (last seen 2026-11-27T09:00:00Z)"
	w.connected("no-replica", metav1.ConditionFalse, "Disconnected", disconnected)
	w.replica("split", replicaEntry{"relay-server-a", 1, 0})
	w.replica("split", replicaEntry{"relay-server-b", 0, 1})
	w.replica("on-a-stopped-replica", replicaEntry{"relay-server-gone", 1, 1})
	w.connected("on-a-stopped-replica", metav1.ConditionTrue, "StreamsOpen", "push and pull streams open on relay-server replica(s) relay-server-gone")

	t.Run("with no live replica Lease, status is stale and that is a problem", func(t *testing.T) {
		st, streams, replicas := streamsFinding(t, c, "two-replicas")
		if replicas.Status != Problem || !strings.Contains(replicas.Detail, "no relay-server replica has renewed its Lease") || !strings.Contains(replicas.Detail, "is relay-server running") {
			t.Errorf("relay-server replicas finding = %+v, want a problem saying status is stale", replicas)
		}
		if streams.Status != Problem || !strings.Contains(streams.Detail, "relay-server-a, relay-server-b, whose Lease has expired or is gone") {
			t.Errorf("relay streams finding = %+v, want a problem naming both replicas as gone", streams)
		}
		if st.Pushing != 0 || len(st.Replicas) != 0 {
			t.Errorf("cluster status = %+v, want no streams counted on replicas that are gone", st)
		}
	})

	now := time.Now()
	w.lease("relay-server-a", now)
	w.lease("relay-server-b", now)
	w.lease("relay-server-gone", now.Add(-time.Minute))

	for _, tc := range []struct {
		name, cluster string
		status        Status
		want          []string
		replicas      string
		push, pull    int
	}{
		{"two live replicas holding streams: connected on both, counts summed", "two-replicas", OK,
			[]string{"connected: 2 push and 2 pull streams, on relay-server-a (1 push, 1 pull), relay-server-b (1 push, 1 pull)"}, "relay-server-a,relay-server-b", 2, 2},
		{"no replica holds streams: a problem with the Connected condition's message", "no-replica", Problem,
			[]string{"not connected (0 push and 0 pull streams): " + disconnected, "kubectl --context mgmt -n gloo-mesh logs deploy/relay-agent"}, "", 0, 0},
		{"no status at all: relay-server has not written it", "no-status", Problem,
			[]string{"relay-server has not written status for no-status: is relay-server running", "is its version one that writes status?"}, "", 0, 0},
		{"push on one replica and pull on another: no replica holds both", "split", Problem,
			[]string{"not connected: 1 push and 1 pull streams on live relay-server replicas, want a replica with at least 1 of each"}, "relay-server-a,relay-server-b", 1, 1},
		{"streams on a replica whose Lease expired: stale although the condition says connected", "on-a-stopped-replica", Problem,
			[]string{"replica(s) relay-server-gone, whose Lease has expired or is gone"}, "", 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, streams, replicas := streamsFinding(t, c, tc.cluster)
			if replicas.Status != OK || replicas.Detail != "live: relay-server-a, relay-server-b" {
				t.Errorf("relay-server replicas finding = %+v, want a and b live", replicas)
			}
			if streams.Status != tc.status {
				t.Errorf("relay streams status = %s, want %s: %s", streams.Status, tc.status, streams.Detail)
			}
			for _, want := range tc.want {
				if !strings.Contains(streams.Detail, want) {
					t.Errorf("relay streams detail lacks %q:\n%s", want, streams.Detail)
				}
			}
			if got := replicaNames(st.Replicas); got != tc.replicas || st.Pushing != tc.push || st.Pulling != tc.pull || st.StreamsFrom != StreamsFromStatus {
				t.Errorf("cluster status: replicas %q, %d push, %d pull, from %q; want %q, %d, %d, from status", got, st.Pushing, st.Pulling, st.StreamsFrom, tc.replicas, tc.push, tc.pull)
			}
		})
	}

	t.Run("the report carries the condition, agent and last seen", func(t *testing.T) {
		st, _, _ := streamsFinding(t, c, "two-replicas")
		if st.ConnectedCondition == nil || st.ConnectedCondition.Status != metav1.ConditionTrue || st.LastSeen != nil {
			t.Errorf("cluster status = %+v, want the Connected condition True and no lastSeen (the leader did not write one)", st)
		}
		text := (&Report{Clusters: []ClusterStatus{st}}).Text(false)
		if !regexp.MustCompile(`(?m)^two-replicas +true +2 +2 +relay-server-a,relay-server-b +unknown$`).MatchString(text) {
			t.Errorf("report table does not name the replicas:\n%s", text)
		}
	})
}
