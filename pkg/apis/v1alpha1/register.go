package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// GroupVersion is the API group and version of meshrelay's resources.
var GroupVersion = schema.GroupVersion{Group: "meshrelay.dev", Version: "v1alpha1"}

var (
	// SchemeBuilder registers this package's types with a runtime.Scheme.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)

	// AddToScheme adds this package's types to a runtime.Scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion,
		&KubernetesCluster{}, &KubernetesClusterList{},
		&RootTrustPolicy{}, &RootTrustPolicyList{},
		&RelayTrust{}, &RelayTrustList{},
	)
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
