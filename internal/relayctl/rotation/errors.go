package rotation

import (
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/types"
)

// noAPI is the error for a management cluster without the RelayTrust kind:
// its CRDs come from a release older than relayctl's.
func noAPI(err error) error {
	return fmt.Errorf("the management cluster does not serve RelayTrust (relaytrusts.meshrelay.dev), which holds the rotations: "+
		"its meshrelay CRDs are older than this relayctl; apply this release's CRDs there (kubectl apply --server-side -f meshrelay-crds.yaml: "+
		"helm upgrade never updates CRDs) and upgrade relay-server, or check --context: %w", err)
}

// readError explains a failed read of the RelayTrust key.
func readError(key types.NamespacedName, err error) error {
	if meta.IsNoMatchError(err) {
		return noAPI(err)
	}
	return fmt.Errorf("management cluster: failed to read RelayTrust %s: %w", key, err)
}

// writeError explains a failed write of the RelayTrust key.
func writeError(key types.NamespacedName, err error) error {
	switch {
	case meta.IsNoMatchError(err):
		return noAPI(err)
	case apierrors.IsNotFound(err):
		return fmt.Errorf("management cluster: namespace %s not found: meshrelay is not installed there, or -n names another namespace: %w", key.Namespace, err)
	}
	return fmt.Errorf("management cluster: failed to write the rotation request to RelayTrust %s: %w", key, err)
}
