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
// then by the leader, and a bootstrap spends its token with an update; the
// answer is the whole object, which none of these writes reads; decoding
// it was about a fifth of each status apply's CPU in a profile of make
// bench's bootstraps.
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

// update writes kc, as it was read at its resourceVersion, with a PUT
// that the API server refuses with a Conflict when the object has moved on
// since; it is refused here without a resourceVersion, which would make the
// write unconditional. kc's managedFields may be left out: the API server
// keeps them when a request omits them.
func (a *rawClusters) update(ctx context.Context, kc *meshv1alpha1.KubernetesCluster) error {
	if kc.ResourceVersion == "" {
		return fmt.Errorf("refusing to write KubernetesCluster %s without a resourceVersion: the write must be conditional", kc.Name)
	}
	obj := *kc
	obj.APIVersion, obj.Kind = meshv1alpha1.GroupVersion.String(), "KubernetesCluster"
	body, err := json.Marshal(&obj)
	if err != nil {
		return fmt.Errorf("failed to encode KubernetesCluster %s: %w", kc.Name, err)
	}
	return a.rest.Put().Namespace(a.ns).Resource("kubernetesclusters").Name(kc.Name).Body(body).Do(ctx).Error()
}
