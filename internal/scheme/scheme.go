// Package scheme holds what every meshrelay component needs to talk to
// Kubernetes: the scheme of the core types and meshrelay's own.
package scheme

import (
	"fmt"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"

	meshv1alpha1 "github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
)

// Scheme returns a scheme with the core Kubernetes types, meshrelay's, and
// cert-manager's Certificate types (the webhook checks Certificates that
// write relay secrets).
func Scheme() (*runtime.Scheme, error) {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		return nil, fmt.Errorf("failed to add core types to scheme: %w", err)
	}
	if err := meshv1alpha1.AddToScheme(s); err != nil {
		return nil, fmt.Errorf("failed to add meshrelay types to scheme: %w", err)
	}
	if err := cmapi.AddToScheme(s); err != nil {
		return nil, fmt.Errorf("failed to add cert-manager types to scheme: %w", err)
	}
	return s, nil
}
