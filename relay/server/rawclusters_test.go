package server

import (
	"maps"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"

	"github.com/meshrelay/meshrelay/internal/testenv"
	meshv1alpha1 "github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
)

// TestRawClustersWritesAreConditionalAndReportTheAPIServersRefusals runs
// rawClusters against a real API server: a cluster is updated only at the
// resourceVersion it was read at, never without one, and status applies
// land, with NotFound for a cluster that does not exist.
func TestRawClustersWritesAreConditionalAndReportTheAPIServersRefusals(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Names: []string{"mgmt"}})
	c := env.Clusters[0]
	ctx := t.Context()
	const ns = "gloo-mesh"
	if err := c.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	kc := &meshv1alpha1.KubernetesCluster{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "cluster-1",
		Annotations: map[string]string{meshv1alpha1.BootstrapTokenHashAnnotation: "h", "team": "a"}}}
	if err := c.Client.Create(ctx, kc); err != nil {
		t.Fatal(err)
	}
	raw := rawClustersOf(t, c, ns)
	get := func() *meshv1alpha1.KubernetesCluster {
		var got meshv1alpha1.KubernetesCluster
		if err := c.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: "cluster-1"}, &got); err != nil {
			t.Fatal(err)
		}
		return &got
	}

	// A spend, as consumeBootstrapToken makes it, of the object as read.
	spend := kc.DeepCopy()
	spend.Annotations = map[string]string{meshv1alpha1.BootstrappedAnnotation: "2026-01-01T00:00:00Z", "team": "a"}
	unconditional := spend.DeepCopy()
	unconditional.ResourceVersion = ""
	if err := raw.update(ctx, unconditional); err == nil {
		t.Fatal("a write without a resourceVersion was made: it must be conditional")
	}
	if err := raw.update(ctx, spend); err != nil {
		t.Fatalf("update at the current resourceVersion: %v", err)
	}
	now := get()
	if !maps.Equal(now.Annotations, spend.Annotations) {
		t.Fatalf("annotations %v, want %v", now.Annotations, spend.Annotations)
	}
	// The same write again, at the version it was checked in: another
	// bootstrap with the same token must lose.
	again := kc.DeepCopy()
	again.Annotations["team"] = "b"
	if err := raw.update(ctx, again); !apierrors.IsConflict(err) {
		t.Fatalf("update at a stale resourceVersion: %v, want Conflict", err)
	}
	if got := get().Annotations; !maps.Equal(got, spend.Annotations) {
		t.Errorf("the refused update changed the annotations to %v", got)
	}

	entry := map[string]any{"replicas": []any{map[string]any{"replica": "r", "pushStreams": int64(1), "pullStreams": int64(1)}}}
	if err := raw.applyStatus(ctx, "cluster-1", replicaFieldManager("r"), entry); err != nil {
		t.Fatalf("apply status: %v", err)
	}
	if r := get().Status.Replicas; len(r) != 1 || r[0].Replica != "r" || r[0].PushStreams != 1 {
		t.Errorf("status.replicas %+v after the apply", r)
	}
	if err := raw.applyStatus(ctx, "no-such-cluster", replicaFieldManager("r"), entry); !apierrors.IsNotFound(err) {
		t.Errorf("apply to a cluster that does not exist: %v, want NotFound", err)
	}
	// What statusWriter.write falls back from: a value the schema refuses.
	bad := map[string]any{"replicas": []any{map[string]any{"replica": "r", "pushStreams": int64(1), "pullStreams": int64(1), "agentVersion": strings.Repeat("v", 129)}}}
	if err := raw.applyStatus(ctx, "cluster-1", replicaFieldManager("r"), bad); !apierrors.IsInvalid(err) {
		t.Errorf("apply of an agentVersion longer than the schema allows: %v, want Invalid", err)
	}
}

// rawClustersOf is a rawClusters of ns on c, as an administrator.
func rawClustersOf(t *testing.T, c *testenv.Cluster, ns string) *rawClusters {
	t.Helper()
	hc, err := rest.HTTPClientFor(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := newRawClusters(c.Config, hc, c.Client.Scheme(), ns)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}
