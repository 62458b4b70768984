package server

import (
	"context"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
)

// trustStatusWriter writes RootTrustPolicy status. Only the reconciler
// calls it: the relay streams never write to the API server.
type trustStatusWriter struct {
	// client writes the status subresource; api reads the policy from the
	// API server, not a cache, since several server replicas write it.
	client    client.Client
	api       client.Reader
	namespace string
}

// update applies change to policy's status, reading it from the API
// server and retrying on conflicts. It writes nothing when change leaves
// the status as it was.
func (w *trustStatusWriter) update(ctx context.Context, policy string, change func(*meshv1alpha1.RootTrustPolicyStatus)) error {
	key := types.NamespacedName{Namespace: w.namespace, Name: policy}
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var p meshv1alpha1.RootTrustPolicy
		if err := w.api.Get(ctx, key, &p); err != nil {
			return err
		}
		before := p.Status.DeepCopy()
		change(&p.Status)
		if equality.Semantic.DeepEqual(before, &p.Status) {
			return nil
		}
		return w.client.Status().Update(ctx, &p)
	})
}

// applyResults writes rs, in order, into their clusters' entries of st.
// Entries are kept sorted by name; a cluster's first result adds its entry.
func applyResults(st *meshv1alpha1.RootTrustPolicyStatus, rs []clusterResult) {
	for _, r := range rs {
		i, found := slices.BinarySearchFunc(st.Clusters, r.cluster, func(c meshv1alpha1.ClusterIntermediateStatus, name string) int {
			return strings.Compare(c.Name, name)
		})
		if !found {
			st.Clusters = slices.Insert(st.Clusters, i, meshv1alpha1.ClusterIntermediateStatus{Name: r.cluster})
		}
		r.apply(&st.Clusters[i])
	}
}
