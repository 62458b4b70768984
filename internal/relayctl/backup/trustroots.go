package backup

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
	"github.com/meshrelay/meshrelay/pkg/relaysecret"
)

// trustRootNames returns the root secrets relay-server generates for the
// RootTrustPolicies of namespace that ask for one (mgmtServerCa.generated):
// root-trust.<policy>, sorted. A cluster without the RootTrustPolicy kind
// has none. A root a policy takes from a secret of the user's
// (secretRef) is the user's to keep, and is not listed.
func trustRootNames(ctx context.Context, c client.Reader, namespace string) ([]string, error) {
	var list meshv1alpha1.RootTrustPolicyList
	if err := c.List(ctx, &list, client.InNamespace(namespace)); err != nil {
		if meta.IsNoMatchError(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("failed to list RootTrustPolicies in namespace %s, whose generated roots a backup holds: %w", namespace, err)
	}
	var names []string
	for _, p := range list.Items {
		if p.Spec.Config.MgmtServerCa.Generated != nil {
			names = append(names, relaysecret.TrustRootName(p.Name))
		}
	}
	slices.Sort(names)
	return names, nil
}

// isTrustRoot reports whether name is a generated RootTrustPolicy root,
// which restore takes beside the names it is given.
func isTrustRoot(name string) bool {
	return strings.HasPrefix(name, relaysecret.TrustRootPrefix) && len(name) > len(relaysecret.TrustRootPrefix)
}
