package webhook

import (
	"k8s.io/apimachinery/pkg/util/validation/field"

	meshv1alpha1 "github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
	"github.com/meshrelay/meshrelay/pkg/pki"
)

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
