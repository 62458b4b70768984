package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"

	meshv1alpha1 "github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
)

// rawClusters writes KubernetesClusters over a REST client of its own that
// does not decode the object the API server answers with. Status is
// applied at every change of a cluster's streams, by every replica and
// then by the leader, and a bootstrap spends its token with a write; the
// answer is the whole object, which none of these writes reads, and
// decoding it costs about as much CPU as making the request (make bench).
// A refusal is the API server's Status, as apierrors reads it.
type rawClusters struct {
	rest rest.Interface
	ns   string
}

// newRawClusters builds a rawClusters from cfg (its rate limit
// included) over httpClient; s decodes the API server's refusals.
func newRawClusters(cfg *rest.Config, httpClient *http.Client, s *runtime.Scheme, ns string) (*rawClusters, error) {
	cfg = rest.CopyConfig(cfg)
	cfg.GroupVersion = &meshv1alpha1.GroupVersion
	cfg.APIPath = "/apis"
	cfg.ContentType = runtime.ContentTypeJSON
	cfg.NegotiatedSerializer = serializer.NewCodecFactory(s).WithoutConversion()
	rc, err := rest.RESTClientForConfigAndClient(cfg, httpClient)
	if err != nil {
		return nil, fmt.Errorf("failed to build the KubernetesCluster client: %w", err)
	}
	return &rawClusters{rest: rc, ns: ns}, nil
}

// statusApplyBody is the apply configuration of a KubernetesCluster's
// status; Status holds only the fields the field manager owns.
type statusApplyBody struct {
	APIVersion string         `json:"apiVersion"`
	Kind       string         `json:"kind"`
	Metadata   statusApplyKey `json:"metadata"`
	Status     any            `json:"status"`
}

type statusApplyKey struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
}

// applyStatus applies status, the fields manager owns, to cluster's
// status, taking over those fields from any other manager.
func (a *rawClusters) applyStatus(ctx context.Context, cluster, manager string, status any) error {
	body, err := json.Marshal(statusApplyBody{
		APIVersion: meshv1alpha1.GroupVersion.String(), Kind: "KubernetesCluster",
		Metadata: statusApplyKey{Name: cluster, Namespace: a.ns}, Status: status,
	})
	if err != nil {
		return fmt.Errorf("failed to encode the status of KubernetesCluster %s: %w", cluster, err)
	}
	return a.rest.Patch(types.ApplyPatchType).Namespace(a.ns).Resource("kubernetesclusters").Name(cluster).SubResource("status").
		Param("fieldManager", manager).Param("force", "true").Body(body).Do(ctx).Error()
}

// patchAnnotations makes changes to cluster's annotations (a nil value
// removes one) only if the cluster is still at resourceVersion: a JSON
// merge patch that names the resourceVersion is refused with a Conflict
// when the object moved on.
func (a *rawClusters) patchAnnotations(ctx context.Context, cluster, resourceVersion string, changes map[string]*string) error {
	if resourceVersion == "" {
		return fmt.Errorf("refusing to write the annotations of KubernetesCluster %s without a resourceVersion: the write must be conditional", cluster)
	}
	body, err := annotationPatch(resourceVersion, changes)
	if err != nil {
		return fmt.Errorf("failed to encode the annotations of KubernetesCluster %s: %w", cluster, err)
	}
	return a.rest.Patch(types.MergePatchType).Namespace(a.ns).Resource("kubernetesclusters").Name(cluster).Body(body).Do(ctx).Error()
}

// annotationPatch is the JSON merge patch that makes changes to an
// object's annotations only if it is still at resourceVersion.
func annotationPatch(resourceVersion string, changes map[string]*string) ([]byte, error) {
	return json.Marshal(map[string]any{"metadata": map[string]any{"resourceVersion": resourceVersion, "annotations": changes}})
}

// annotationChanges is what turns the annotations before into after: the
// values added or changed, and nil for those removed.
func annotationChanges(before, after map[string]string) map[string]*string {
	changes := map[string]*string{}
	for k := range before {
		if _, ok := after[k]; !ok {
			changes[k] = nil
		}
	}
	for k, v := range after {
		if b, ok := before[k]; !ok || b != v {
			changes[k] = &v
		}
	}
	return changes
}
