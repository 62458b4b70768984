package server

import (
	"context"
	"fmt"

	meshv1alpha1 "github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
	"github.com/meshrelay/meshrelay/pkg/trustbundle"
)

// publishBundle publishes the trust bundle on the management cluster as
// the ClusterTrustBundle of this install, for pods that mount it. Where
// the cluster does not serve ClusterTrustBundles it says so once and
// carries on: relay-root-tls-secret's ca.crt holds the same roots.
func (s *Server) publishBundle(ctx context.Context, bundle []byte) error {
	if s.direct == nil {
		return nil
	}
	published, err := trustbundle.Publish(ctx, s.direct, s.cfg.Namespace, bundle)
	if err != nil {
		return fmt.Errorf("failed to publish the trust bundle as ClusterTrustBundle %s: %w", meshv1alpha1.TrustBundleName(s.cfg.Namespace), err)
	}
	if !published && !s.noBundleAPI {
		s.noBundleAPI = true
		s.log.Info("this cluster does not serve ClusterTrustBundles (certificates.k8s.io/v1): the trust bundle is published in relay-root-tls-secret's ca.crt only")
	}
	return nil
}
