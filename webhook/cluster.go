package webhook

import (
	"context"

	"k8s.io/apimachinery/pkg/util/validation/field"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	meshv1alpha1 "github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
	"github.com/meshrelay/meshrelay/pkg/pki"
)

// clusterValidator admits KubernetesClusters whose name can be a
// certificate's DNS name.
type clusterValidator struct{}

var _ admission.Validator[*meshv1alpha1.KubernetesCluster] = clusterValidator{}

// SetupWebhookWithManager serves v on ClustersPath.
func (v clusterValidator) SetupWebhookWithManager(mgr ctrl.Manager) error {
	return ctrl.NewWebhookManagedBy(mgr, &meshv1alpha1.KubernetesCluster{}).
		WithValidator(v).
		WithValidatorCustomPath(ClustersPath).
		Complete()
}

// ValidateCreate checks a new KubernetesCluster.
func (clusterValidator) ValidateCreate(_ context.Context, kc *meshv1alpha1.KubernetesCluster) (admission.Warnings, error) {
	return verdict(validateCluster(kc), "KubernetesCluster "+kc.Name)
}

// ValidateUpdate checks the KubernetesCluster as updated.
func (clusterValidator) ValidateUpdate(_ context.Context, _, kc *meshv1alpha1.KubernetesCluster) (admission.Warnings, error) {
	return verdict(validateCluster(kc), "KubernetesCluster "+kc.Name)
}

// ValidateDelete allows every delete.
func (clusterValidator) ValidateDelete(context.Context, *meshv1alpha1.KubernetesCluster) (admission.Warnings, error) {
	return nil, nil
}

// validateCluster checks a KubernetesCluster: its name becomes the DNS name
// of the cluster's client certificate, so it must be a DNS-1123 label (no
// dots, no underscores).
func validateCluster(kc *meshv1alpha1.KubernetesCluster) *problems {
	p := &problems{}
	if err := pki.CheckDNSLabel(kc.Name); err != nil {
		p.deny(field.NewPath("metadata", "name"), "%v: the cluster name is the DNS name of its client certificate", err)
	}
	return p
}
