// Package v1alpha1 holds meshrelay's custom resources in the meshrelay.dev API
// group: KubernetesCluster, a workload cluster registered with the relay server,
// and RootTrustPolicy, which asks the server for a federated Istio root of trust.
// The shapes follow Gloo Mesh's resources of the same names, the product
// meshrelay is compatible with (docs/compatibility.md), so that only
// apiVersion changes.
//
// +kubebuilder:object:generate=true
// +groupName=meshrelay.dev
package v1alpha1
