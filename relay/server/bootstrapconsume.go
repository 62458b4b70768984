package server

import (
	"context"
	"encoding/json"
	"errors"
	"maps"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
	"github.com/meshrelay/meshrelay/pkg/bootstraptoken"
)

var errNoResourceVersion = errors.New("no resourceVersion to make the write conditional on")

// consumeAt spends cred on kc as read (from the cache) with one JSON merge
// patch of its annotations that carries kc's resourceVersion: the API
// server applies it only if nothing changed kc since, so the token is spent
// exactly once, as by a read and an update, without the read. It returns
// the API server's Conflict as it is when kc changed since (the cache was
// behind, or another bootstrap or a status write came first), for the
// caller to read kc past the cache and try again; other refusals come with
// their reason label.
func (s *service) consumeAt(ctx context.Context, kc *meshv1alpha1.KubernetesCluster, cred *bootstrapCredential) (string, error) {
	if kc.ResourceVersion == "" {
		// A patch without one would not be conditional.
		return reasonUnavailable, apierrors.NewConflict(meshv1alpha1.GroupVersion.WithResource("kubernetesclusters").GroupResource(), kc.Name, errNoResourceVersion)
	}
	if reason, err := s.stillUnused(kc, cred); err != nil {
		// The cache may be behind: let the read past it decide.
		return reason, apierrors.NewConflict(meshv1alpha1.GroupVersion.WithResource("kubernetesclusters").GroupResource(), kc.Name, err)
	}
	after := maps.Clone(kc.Annotations)
	if after == nil {
		after = map[string]string{}
	}
	if cred.shared {
		bootstraptoken.MarkBootstrapped(after, s.now())
	} else {
		bootstraptoken.Consume(after, s.now())
	}
	patch, err := annotationsPatch(kc.ResourceVersion, kc.Annotations, after)
	if err != nil {
		return reasonUnavailable, status.Errorf(codes.Internal, "failed to record the use of the bootstrap token: %v", err)
	}
	target := &meshv1alpha1.KubernetesCluster{ObjectMeta: metav1.ObjectMeta{Namespace: kc.Namespace, Name: kc.Name}}
	switch err := s.writer.Patch(ctx, target, client.RawPatch(types.MergePatchType, patch)); {
	case err == nil:
		return "", nil
	case apierrors.IsConflict(err):
		return reasonUnavailable, err
	case apierrors.IsNotFound(err):
		return reasonUnregistered, status.Errorf(codes.PermissionDenied, "cluster %s was deregistered during its bootstrap", kc.Name)
	default:
		return reasonUnavailable, status.Errorf(codes.Unavailable, "failed to record the use of the bootstrap token on KubernetesCluster %s/%s: %v", kc.Namespace, kc.Name, err)
	}
}

// annotationsPatch is a JSON merge patch from annotations before to after,
// conditional on resourceVersion: removed keys are null.
func annotationsPatch(resourceVersion string, before, after map[string]string) ([]byte, error) {
	changes := map[string]any{}
	for k, v := range after {
		if old, ok := before[k]; !ok || old != v {
			changes[k] = v
		}
	}
	for k := range before {
		if _, ok := after[k]; !ok {
			changes[k] = nil
		}
	}
	return json.Marshal(map[string]any{"metadata": map[string]any{"resourceVersion": resourceVersion, "annotations": changes}})
}
