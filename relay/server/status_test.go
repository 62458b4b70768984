package server

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/go-logr/logr/testr"
	"google.golang.org/grpc/codes"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshrelay/meshrelay/internal/testenv"
	meshv1alpha1 "github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
	"github.com/meshrelay/meshrelay/pkg/config"
)

// replicaFixture is a relay-server replica the test can stop.
type replicaFixture struct {
	*relayFixture
	stop func()
}

// startReplica runs a relay-server replica named name in ns on c, after
// before, if any, has set up what the test changes.
func startReplica(t *testing.T, c *testenv.Cluster, ns, name string, before ...func(*Server)) *replicaFixture {
	t.Helper()
	cfg := config.DefaultServer()
	cfg.Namespace, cfg.ReplicaName = ns, name
	cfg.ClientCertificateTTL = metav1.Duration{Duration: time.Hour}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mlis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(Options{Config: cfg, RESTConfig: c.Config, Log: testr.New(t).WithValues("replica", name), Listener: lis, MetricsListener: mlis})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range before {
		f(srv)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("replica %s Run: %v", name, err)
			}
		case <-time.After(20 * time.Second):
			t.Errorf("replica %s did not stop within 20s", name)
		}
	}
	t.Cleanup(stop)
	f := &relayFixture{t: t, cluster: c, cfg: cfg, srv: srv, addr: lis.Addr().String(), metrics: "http://" + mlis.Addr().String()}
	f.eventually("replica "+name+" is ready", func() error {
		if body, code := f.get("/readyz"); code != http.StatusOK {
			return fmt.Errorf("readyz %d: %s", code, body)
		}
		return nil
	})
	return &replicaFixture{relayFixture: f, stop: stop}
}

func TestReplicasWriteTheirOwnStatusEntriesAndTheLeaderDerivesConditions(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Names: []string{"mgmt"}})
	c := env.Clusters[0]
	const ns = "gloo-mesh"
	if err := c.Client.Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	a := startReplica(t, c, ns, "relay-server-a")
	b := startReplica(t, c, ns, "relay-server-b")
	a.register("cluster-1")
	key := types.NamespacedName{Namespace: ns, Name: "cluster-1"}
	get := func() *meshv1alpha1.KubernetesCluster {
		var kc meshv1alpha1.KubernetesCluster
		if err := c.Client.Get(t.Context(), key, &kc); err != nil {
			t.Fatalf("get KubernetesCluster cluster-1: %v", err)
		}
		return &kc
	}
	waitFor := func(what string, check func(kc *meshv1alpha1.KubernetesCluster) error) {
		t.Helper()
		testenv.Eventually(t, what, 30*time.Second, func() error { return check(get()) })
	}
	condition := func(kc *meshv1alpha1.KubernetesCluster, typ, status, reason string) error {
		cond := meta.FindStatusCondition(kc.Status.Conditions, typ)
		if cond == nil || string(cond.Status) != status || cond.Reason != reason {
			return fmt.Errorf("condition %s = %+v, want %s/%s; status %+v", typ, cond, status, reason, kc.Status)
		}
		return nil
	}

	waitFor("a registered cluster without a certificate is Registered, not Connected", func(kc *meshv1alpha1.KubernetesCluster) error {
		if err := condition(kc, meshv1alpha1.ConditionRegistered, "True", "NoToken"); err != nil {
			return err
		}
		if err := condition(kc, meshv1alpha1.ConditionConnected, "False", "Disconnected"); err != nil {
			return err
		}
		return condition(kc, meshv1alpha1.ConditionCertificateValid, "Unknown", "Unknown")
	})

	first, _ := a.bootstrap(a.dial(nil), "cluster-1", a.token())
	cert, err := renew(t.Context(), a.dial(first))
	if err != nil {
		t.Fatalf("Renew: %v", err)
	}
	serial := cert.Leaf.SerialNumber.Text(16)
	onA := holdStreams(t, a.relayFixture, "agent-1", cert)
	waitFor("streams on replica a show in its entry, and the leader says Connected", func(kc *meshv1alpha1.KubernetesCluster) error {
		if len(kc.Status.Replicas) != 1 || kc.Status.Replicas[0].Replica != "relay-server-a" || kc.Status.Replicas[0].PushStreams != 1 || kc.Status.Replicas[0].PullStreams != 1 {
			return fmt.Errorf("replicas %+v, want relay-server-a with 1 push and 1 pull", kc.Status.Replicas)
		}
		if kc.Status.ClientCertificate == nil || kc.Status.ClientCertificate.Serial != serial || kc.Status.ClientCertificateNotAfter == nil {
			return fmt.Errorf("clientCertificate %+v, want serial %s", kc.Status.ClientCertificate, serial)
		}
		if kc.Status.AgentVersion != "test" || kc.Status.LastSeen == nil {
			return fmt.Errorf("agentVersion %q lastSeen %v, want test and a time", kc.Status.AgentVersion, kc.Status.LastSeen)
		}
		if err := condition(kc, meshv1alpha1.ConditionConnected, "True", "StreamsOpen"); err != nil {
			return err
		}
		if c := meta.FindStatusCondition(kc.Status.Conditions, meshv1alpha1.ConditionConnected); !strings.Contains(c.Message, "relay-server-a") {
			return fmt.Errorf("Connected message %q does not name relay-server-a", c.Message)
		}
		if kc.Status.ConnectedReplicas != "relay-server-a" {
			return fmt.Errorf("connectedReplicas %q, want relay-server-a", kc.Status.ConnectedReplicas)
		}
		if err := condition(kc, meshv1alpha1.ConditionRegistered, "True", "Bootstrapped"); err != nil {
			return err
		}
		return condition(kc, meshv1alpha1.ConditionCertificateValid, "True", "Valid")
	})

	onB := holdStreams(t, b.relayFixture, "agent-2", cert)
	waitFor("both replicas' entries are kept side by side", func(kc *meshv1alpha1.KubernetesCluster) error {
		got := map[string]int32{}
		for _, r := range kc.Status.Replicas {
			got[r.Replica] = r.PushStreams + r.PullStreams
		}
		if got["relay-server-a"] != 2 || got["relay-server-b"] != 2 || len(got) != 2 {
			return fmt.Errorf("replicas %+v, want a and b with 2 streams each", kc.Status.Replicas)
		}
		if kc.Status.ConnectedReplicas != "relay-server-a,relay-server-b" {
			return fmt.Errorf("connectedReplicas %q, want relay-server-a,relay-server-b", kc.Status.ConnectedReplicas)
		}
		return nil
	})
	table, _, err := env.Kubectl(t.Context(), "", "--context", "mgmt", "-n", ns, "get", "kubernetesclusters", "cluster-1")
	if err != nil || !strings.Contains(table, "REPLICAS") || !strings.Contains(table, "relay-server-a,relay-server-b") {
		t.Errorf("kubectl get kubernetesclusters: %v\n%s\nwant a Replicas column naming both replicas", err, table)
	}
	t.Logf("$ kubectl get kubernetesclusters\n%s", table)
	managers := map[string]bool{}
	for _, mf := range get().ManagedFields {
		if mf.Subresource == "status" {
			managers[mf.Manager] = true
		}
	}
	for _, m := range []string{"relay-server-replica/relay-server-a", "relay-server-replica/relay-server-b", "relay-server"} {
		if !managers[m] {
			t.Errorf("status field managers %v lack %s: each replica applies its own entry and the leader the rest", managers, m)
		}
	}

	t.Run("a live replica whose Lease and entry were removed writes its entry again", func(t *testing.T) {
		// What the leader does to a replica whose renewals failed for
		// longer than the Lease lasts.
		if err := c.Client.Delete(t.Context(), &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "relay-server-replica-relay-server-b"}}); err != nil {
			t.Fatal(err)
		}
		if err := removeEntry(t.Context(), c.Client, get(), "relay-server-b", "test"); err != nil {
			t.Fatal(err)
		}
		for _, r := range get().Status.Replicas {
			if r.Replica == "relay-server-b" {
				t.Fatalf("the entry of relay-server-b is still there: %+v", get().Status.Replicas)
			}
		}
		waitFor("relay-server-b's entry is back", func(kc *meshv1alpha1.KubernetesCluster) error {
			for _, r := range kc.Status.Replicas {
				if r.Replica == "relay-server-b" && r.PushStreams == 1 && r.PullStreams == 1 {
					return nil
				}
			}
			return fmt.Errorf("replicas %+v, want relay-server-b with its streams", kc.Status.Replicas)
		})
	})

	t.Run("a replica writes a cluster's entry at most every two seconds, however fast its streams come and go", func(t *testing.T) {
		var before meshv1alpha1.KubernetesCluster
		if err := c.Client.Get(t.Context(), key, &before); err != nil {
			t.Fatal(err)
		}
		watcher, err := client.NewWithWatch(c.Config, client.Options{Scheme: c.Client.Scheme()})
		if err != nil {
			t.Fatal(err)
		}
		w, err := watcher.Watch(t.Context(), &meshv1alpha1.KubernetesClusterList{}, client.InNamespace(ns), &client.ListOptions{Raw: &metav1.ListOptions{ResourceVersion: before.ResourceVersion}})
		if err != nil {
			t.Fatal(err)
		}
		defer w.Stop()
		start := time.Now()
		for range 10 {
			h := holdStreams(t, b.relayFixture, "churn", cert)
			h.cancel()
			<-h.pull
		}
		churn := time.Since(start)
		time.Sleep(3 * time.Second)
		writes := 0
	drain:
		for {
			select {
			case ev := <-w.ResultChan():
				if kc, ok := ev.Object.(*meshv1alpha1.KubernetesCluster); ok && kc.Name == "cluster-1" {
					writes++
				}
			default:
				break drain
			}
		}
		// Each of the replica's writes can be followed by one of the
		// leader's: two per statusMinInterval, and the last state.
		if limit := 2*int(churn/statusMinInterval) + 4; writes > limit {
			t.Errorf("10 stream pairs opened and closed in %s made %d writes of cluster-1, want at most %d", churn.Round(time.Millisecond), writes, limit)
		}
		t.Logf("10 stream pairs opened and closed in %s: %d writes of cluster-1", churn.Round(time.Millisecond), writes)
	})

	t.Run("a stopped replica's entry and Lease go, and the cluster stays connected through the other", func(t *testing.T) {
		a.stop()
		// The replica ended the streams as it stopped, rather than let
		// them run until its graceful stop gave up on them.
		end := <-onA.pull
		wantStatus(t, end.err, codes.Unavailable, "relay-server replica relay-server-a is shutting down")
		waitFor("only relay-server-b's entry is left", func(kc *meshv1alpha1.KubernetesCluster) error {
			if len(kc.Status.Replicas) != 1 || kc.Status.Replicas[0].Replica != "relay-server-b" {
				return fmt.Errorf("replicas %+v, want relay-server-b alone", kc.Status.Replicas)
			}
			return condition(kc, meshv1alpha1.ConditionConnected, "True", "StreamsOpen")
		})
		var lease coordinationv1.Lease
		err := c.Client.Get(t.Context(), types.NamespacedName{Namespace: ns, Name: "relay-server-replica-relay-server-a"}, &lease)
		if err == nil {
			t.Errorf("the stopped replica's Lease is still there: %+v", lease.Spec)
		}
		for _, mf := range get().ManagedFields {
			if mf.Manager == "relay-server-replica/relay-server-a" {
				t.Errorf("the stopped replica still has managed fields, which would pile up with every rollout: %s", mf.FieldsV1.String())
			}
		}
	})

	t.Run("a replica restarted under the same name removes the entry its previous process left", func(t *testing.T) {
		// relay-server-a crashed holding streams: its entry says so and
		// its Lease is live, as it would be right after a container
		// restart.
		stale := clusterApply(ns, "cluster-1")
		stale.Object["status"] = map[string]any{"replicas": []any{map[string]any{"replica": "relay-server-a", "pushStreams": int64(1), "pullStreams": int64(1)}}}
		if err := c.Client.Status().Apply(t.Context(), client.ApplyConfigurationFromUnstructured(stale), client.FieldOwner(replicaFieldManager("relay-server-a")), client.ForceOwnership); err != nil {
			t.Fatal(err)
		}
		a = startReplica(t, c, ns, "relay-server-a")
		// It waits staleEntryGrace for agents to come back first.
		testenv.Eventually(t, "the restarted relay-server-a removed its stale entry", staleEntryGrace+30*time.Second, func() error {
			kc := get()
			for _, r := range kc.Status.Replicas {
				if r.Replica == "relay-server-a" {
					return fmt.Errorf("replicas %+v still list relay-server-a", kc.Status.Replicas)
				}
			}
			if kc.Status.ConnectedReplicas != "relay-server-b" {
				return fmt.Errorf("connectedReplicas %q, want relay-server-b alone", kc.Status.ConnectedReplicas)
			}
			return nil
		})
	})

	t.Run("a cluster with no streams left is Disconnected, with when it was last seen", func(t *testing.T) {
		onB.cancel()
		waitFor("Connected is False", func(kc *meshv1alpha1.KubernetesCluster) error {
			if err := condition(kc, meshv1alpha1.ConditionConnected, "False", "Disconnected"); err != nil {
				return err
			}
			if c := meta.FindStatusCondition(kc.Status.Conditions, meshv1alpha1.ConditionConnected); !strings.Contains(c.Message, "last seen") {
				return fmt.Errorf("Connected message %q does not say when the cluster was last seen", c.Message)
			}
			return nil
		})
	})

	t.Run("a revoked certificate makes CertificateValid False and its streams leave with an Event", func(t *testing.T) {
		again := holdStreams(t, b.relayFixture, "agent-3", cert)
		patch := client.RawPatch(types.MergePatchType, []byte(`{"spec":{"revocation":{"serials":["`+serial+`"]}}}`))
		if err := c.Client.Patch(t.Context(), get(), patch); err != nil {
			t.Fatal(err)
		}
		<-again.pull
		waitFor("CertificateValid is False: Revoked", func(kc *meshv1alpha1.KubernetesCluster) error {
			return condition(kc, meshv1alpha1.ConditionCertificateValid, "False", "Revoked")
		})
		if _, err := renew(t.Context(), b.dial(cert)); err == nil {
			t.Fatal("a revoked certificate renewed")
		}
		wantEvents(t, c, ns, "cluster-1", map[string]string{EventBootstrapped: "Normal", EventRenewed: "Normal", EventEvicted: "Warning", EventRefused: "Warning"})
	})

	t.Run("a certificate with under a third of its lifetime left gets a CertificateExpiring Event", func(t *testing.T) {
		short := newRevSigner(t, b.relayFixture).issue(get().UID, 6*time.Second)
		holdStreams(t, b.relayFixture, "agent-4", short)
		wantEvents(t, c, ns, "cluster-1", map[string]string{EventCertificateExpiring: "Warning"})
	})
}

// wantEvents waits until cluster's Events include each reason with its
// type.
func wantEvents(t *testing.T, c *testenv.Cluster, ns, cluster string, want map[string]string) {
	t.Helper()
	testenv.Eventually(t, "Events on KubernetesCluster "+cluster, 30*time.Second, func() error {
		var list eventsv1.EventList
		if err := c.Client.List(t.Context(), &list, client.InNamespace(ns)); err != nil {
			return err
		}
		got := map[string]string{}
		for _, e := range list.Items {
			if e.Regarding.Kind == "KubernetesCluster" && e.Regarding.Name == cluster && e.ReportingController == "relay-server" {
				got[e.Reason] = e.Type
			}
		}
		for reason, typ := range want {
			if got[reason] != typ {
				return fmt.Errorf("events %v, want %s of type %s", got, reason, typ)
			}
		}
		return nil
	})
}

func TestDeriveStatusCountsOnlyLiveReplicasAndKeepsTheNewestCertificate(t *testing.T) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	at := func(d time.Duration) metav1.Time { return metav1.NewTime(now.Add(d)) }
	older := &meshv1alpha1.CertificateSummary{Serial: "1", NotBefore: at(-2 * time.Hour), NotAfter: at(time.Hour)}
	newer := &meshv1alpha1.CertificateSummary{Serial: "2", NotBefore: at(-time.Hour), NotAfter: at(2 * time.Hour)}
	seen := func(d time.Duration) *metav1.Time { t := at(d); return &t }
	kc := &meshv1alpha1.KubernetesCluster{ObjectMeta: metav1.ObjectMeta{Name: "cluster-1", Generation: 3}}
	kc.Status.Replicas = []meshv1alpha1.ReplicaStatus{
		{Replica: "gone", PushStreams: 1, PullStreams: 1, ClientCertificate: newer, AgentVersion: "v2", LastSeen: seen(-time.Minute)},
		{Replica: "live", PushStreams: 1, PullStreams: 0, ClientCertificate: older, AgentVersion: "v1", LastSeen: seen(-2 * time.Minute)},
	}
	live := func(r meshv1alpha1.ReplicaStatus) bool { return r.Replica == "live" }
	st := deriveStatus(kc, live, now)
	if st.ClientCertificate.Serial != "2" || st.AgentVersion != "v2" || !st.LastSeen.Equal(seen(-time.Minute)) {
		t.Errorf("newest certificate %s, agent %s, last seen %v; want 2, v2 and a minute ago", st.ClientCertificate.Serial, st.AgentVersion, st.LastSeen)
	}
	if c := meta.FindStatusCondition(st.Conditions, meshv1alpha1.ConditionConnected); c.Status != metav1.ConditionFalse {
		t.Errorf("Connected %s (%s): the live replica holds only a push stream and the other is gone; want False", c.Status, c.Message)
	}
	if c := meta.FindStatusCondition(st.Conditions, meshv1alpha1.ConditionCertificateValid); c.Status != metav1.ConditionTrue || c.Reason != "Valid" {
		t.Errorf("CertificateValid %s/%s, want True/Valid", c.Status, c.Reason)
	}
	for _, c := range st.Conditions {
		if c.ObservedGeneration != 3 {
			t.Errorf("condition %s observedGeneration %d, want 3", c.Type, c.ObservedGeneration)
		}
	}

	late := now.Add(90 * time.Minute) // a third of serial 2's 3h life is left at 1h
	st = deriveStatus(kc, live, late)
	if c := meta.FindStatusCondition(st.Conditions, meshv1alpha1.ConditionCertificateValid); c.Reason != "ExpiringSoon" {
		t.Errorf("at %s CertificateValid reason %s, want ExpiringSoon: a disconnected cluster with under a third of its lifetime left", late, c.Reason)
	}
	st = deriveStatus(kc, live, now.Add(3*time.Hour))
	if c := meta.FindStatusCondition(st.Conditions, meshv1alpha1.ConditionCertificateValid); c.Status != metav1.ConditionFalse || c.Reason != "Expired" {
		t.Errorf("after expiry CertificateValid %s/%s, want False/Expired", c.Status, c.Reason)
	}
	kc.Spec.Revocation = &meshv1alpha1.Revocation{IssuedBefore: seen(-30 * time.Minute)}
	st = deriveStatus(kc, func(meshv1alpha1.ReplicaStatus) bool { return true }, now)
	if c := meta.FindStatusCondition(st.Conditions, meshv1alpha1.ConditionCertificateValid); c.Reason != "Revoked" {
		t.Errorf("with issuedBefore after the newest certificate's issue, reason %s, want Revoked", c.Reason)
	}
	if c := meta.FindStatusCondition(st.Conditions, meshv1alpha1.ConditionConnected); c.Status != metav1.ConditionTrue || !strings.Contains(c.Message, "gone") {
		t.Errorf("with every replica live, Connected %s %q, want True through replica gone", c.Status, c.Message)
	}
	if st.ConnectedReplicas != "gone" {
		t.Errorf("connectedReplicas %q, want gone (live holds no pull stream)", st.ConnectedReplicas)
	}
	many := make([]string, 200)
	for i := range many {
		many[i] = fmt.Sprintf("relay-server-%03d", i)
	}
	if got := joinBounded(many, maxConnectedReplicas); len(got) > maxConnectedReplicas || !strings.HasSuffix(got, ",...") || !strings.HasPrefix(got, "relay-server-000,relay-server-001,") {
		t.Errorf("200 replicas joined into %d bytes ending %q, want at most %d ending with ,...", len(got), got[max(0, len(got)-20):], maxConnectedReplicas)
	}
}

func TestAgentVersionsThatAreNotPrintableAreNotWrittenIntoStatus(t *testing.T) {
	for v, want := range map[string]bool{"v1.2.3": true, "v1.2.3-dirty+abc": true, "v1\x00": false, "v\xff1": false, "line\nbreak": false} {
		if got := printableVersion(v); got != want {
			t.Errorf("printableVersion(%q) = %v, want %v", v, got, want)
		}
	}
}

func TestCertificateFieldsInStatusAreBounded(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"abc", "abc"},
		{strings.Repeat("a", 41), strings.Repeat("a", 37) + "..."},
		{strings.Repeat("é", 30), strings.Repeat("é", 18) + "..."},
	} {
		got := truncate(tc.in, maxSerialField)
		if got != tc.want || len(got) > maxSerialField || !utf8.ValidString(got) {
			t.Errorf("truncate(%q) = %q (%d bytes), want %q: at most %d bytes, cut on a rune", tc.in, got, len(got), tc.want, maxSerialField)
		}
	}
}

// clusterApply is the start of an apply configuration of a KubernetesCluster.
func clusterApply(ns, name string) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": meshv1alpha1.GroupVersion.String(),
		"kind":       "KubernetesCluster",
		"metadata":   map[string]any{"name": name, "namespace": ns},
	}}
}
