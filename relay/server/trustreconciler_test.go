package server

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	testingclock "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/meshrelay/meshrelay/internal/scheme"
	meshv1alpha1 "github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
	"github.com/meshrelay/meshrelay/pkg/config"
)

// reconcilerFixture is a trustReconciler over an in-memory client.
type reconcilerFixture struct {
	r       *trustReconciler
	c       client.Client
	checked int
}

// newReconcilerFixture holds RootTrustPolicy mesh, whose root is
// generated, as edit changes it; funcs intercept the client.
func newReconcilerFixture(t *testing.T, edit func(*meshv1alpha1.RootTrustPolicy), funcs interceptor.Funcs) *reconcilerFixture {
	t.Helper()
	s, _ := scheme.Scheme()
	p := &meshv1alpha1.RootTrustPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "gloo-mesh", Name: "mesh", Generation: 2}}
	p.Spec.Config.MgmtServerCa.Generated = &meshv1alpha1.GeneratedRoot{}
	if edit != nil {
		edit(p)
	}
	c := interceptor.NewClient(fake.NewClientBuilder().WithScheme(s).WithObjects(p).WithStatusSubresource(p).Build(), funcs)
	f := &reconcilerFixture{c: c}
	cfg := config.DefaultServer()
	f.r = newTrustReconciler(trustReconcilerOptions{
		Client: c, API: c, Namespace: "gloo-mesh", RelaySecrets: relaySecretsOf(&cfg),
		State: newTrustState(), Results: newPendingResults(), Queue: newPolicyQueue("gloo-mesh"),
		CheckAll: func() { f.checked++ },
		Metrics:  newMetrics(prometheus.NewRegistry()), Clock: testingclock.NewFakePassiveClock(time.Now()), Log: logr.Discard(),
	})
	return f
}

func (f *reconcilerFixture) reconcile(t *testing.T) (reconcile.Result, error) {
	t.Helper()
	return f.r.Reconcile(context.Background(), reconcile.Request{NamespacedName: types.NamespacedName{Namespace: "gloo-mesh", Name: "mesh"}})
}

func (f *reconcilerFixture) status(t *testing.T) meshv1alpha1.RootTrustPolicyStatus {
	t.Helper()
	var p meshv1alpha1.RootTrustPolicy
	if err := f.c.Get(context.Background(), types.NamespacedName{Namespace: "gloo-mesh", Name: "mesh"}, &p); err != nil {
		t.Fatal(err)
	}
	return p.Status
}

func TestTrustReconcilerLoadsThePolicyAndWritesItsResults(t *testing.T) {
	f := newReconcilerFixture(t, func(p *meshv1alpha1.RootTrustPolicy) {
		p.Status.Root = &meshv1alpha1.RootStatus{SHA256: "an-older-root"}
		p.Status.Clusters = []meshv1alpha1.ClusterIntermediateStatus{{Name: "c0", Issued: true}}
	}, interceptor.Funcs{})
	f.r.Results.add("mesh", clusterResult{cluster: "c1", kind: resultIssued, at: time.Now(), serial: "ab", notAfter: time.Now().Add(time.Hour)})
	if _, err := f.reconcile(t); err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	st := f.status(t)
	loaded := f.r.State.serving("c1")
	switch {
	case loaded == nil:
		t.Fatal("the policy was not loaded")
	case st.Root == nil || st.Root.SHA256 != loaded.rootSHA256:
		t.Errorf("status.root %+v, want the loaded root %s", st.Root, loaded.rootSHA256)
	case !meta.IsStatusConditionTrue(st.Conditions, "Ready") || st.ObservedGeneration != 2:
		t.Errorf("conditions %+v, observedGeneration %d", st.Conditions, st.ObservedGeneration)
	case len(st.Clusters) != 2 || st.Clusters[0].Issued || st.Clusters[1].Name != "c1" || st.Clusters[1].Serial != "ab":
		// c1's intermediate was issued under the root the status named
		// before, so the new root clears it too.
		t.Errorf("clusters %+v, want c0 and c1, neither issued under the new root, c1 with its serial", st.Clusters)
	}
	if f.checked != 1 {
		t.Errorf("connected clusters checked %d times, want once", f.checked)
	}
	if rest := f.r.Results.policies(); len(rest) != 0 {
		t.Errorf("results still pending for %v", rest)
	}
}

func TestTrustReconcilerSaysWhyAPolicyIsNotReady(t *testing.T) {
	f := newReconcilerFixture(t, func(p *meshv1alpha1.RootTrustPolicy) {
		p.Spec.Config.IntermediateCertOptions.TTL = &metav1.Duration{Duration: time.Second}
	}, interceptor.Funcs{})
	f.r.State.setPolicy(&trustPolicy{name: "mesh"})
	if _, err := f.reconcile(t); err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	c := meta.FindStatusCondition(f.status(t).Conditions, "Ready")
	if c == nil || c.Status != metav1.ConditionFalse || c.Reason != "InvalidSpec" {
		t.Errorf("Ready condition %+v, want False for InvalidSpec", c)
	}
	if f.r.State.serving("c1") != nil || f.checked != 0 {
		t.Errorf("a policy that is not ready stayed loaded (%v) or clusters were checked (%d)", f.r.State.serving("c1"), f.checked)
	}
}

func TestTrustReconcilerForgetsADeletedPolicyAndItsResults(t *testing.T) {
	f := newReconcilerFixture(t, nil, interceptor.Funcs{})
	f.r.State.setPolicy(&trustPolicy{name: "mesh"})
	f.r.Results.add("mesh", clusterResult{cluster: "c1", message: "refused"})
	if err := f.c.Delete(context.Background(), &meshv1alpha1.RootTrustPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "gloo-mesh", Name: "mesh"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.reconcile(t); err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	if f.r.State.serving("c1") != nil || len(f.r.Results.policies()) != 0 {
		t.Error("a deleted policy stayed loaded or kept its results")
	}
}

func TestTrustReconcilerKeepsResultsItCouldNotWrite(t *testing.T) {
	f := newReconcilerFixture(t, nil, interceptor.Funcs{
		SubResourceUpdate: func(context.Context, client.Client, string, client.Object, ...client.SubResourceUpdateOption) error {
			return errors.New("the API server is unavailable")
		},
	})
	f.r.Results.add("mesh", clusterResult{cluster: "c1", message: "refused"})
	if _, err := f.reconcile(t); err == nil {
		t.Fatal("Reconcile succeeded without writing the status")
	}
	if got := describe(f.r.Results.take("mesh")); !slices.Equal(got, []string{"c1:refused"}) {
		t.Errorf("pending after a failed write: %v, want the result kept for the retry", got)
	}
}
