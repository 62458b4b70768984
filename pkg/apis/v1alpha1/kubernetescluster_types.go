package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// KubernetesCluster registers a workload cluster with the relay server. Its name
// is the cluster name: the DNS SAN of the agent's client certificate must equal
// it, so it must be a DNS-1123 label (no underscores, at most 63 characters).
// Only registered clusters get certificates or connect; deleting one drops that
// cluster's streams and refuses its renewals.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=kc,categories=meshrelay
// +kubebuilder:printcolumn:name="Domain",type=string,JSONPath=`.spec.clusterDomain`
// +kubebuilder:printcolumn:name="Connected",type=string,JSONPath=`.status.conditions[?(@.type=="Connected")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:printcolumn:name="Revoked-Before",type=date,priority=1,JSONPath=`.spec.revocation.issuedBefore`
// +kubebuilder:validation:XValidation:rule="size(self.metadata.name) <= 63 && self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",message="metadata.name must be a DNS-1123 label (lowercase letters, digits and '-', at most 63 characters, no '_' or '.'): it becomes the DNS SAN of the cluster's client certificate"
type KubernetesCluster struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   KubernetesClusterSpec   `json:"spec,omitempty"`
	Status KubernetesClusterStatus `json:"status,omitempty"`
}

// KubernetesClusterSpec describes a registered workload cluster.
type KubernetesClusterSpec struct {
	// ClusterDomain is the workload cluster's DNS domain.
	// +kubebuilder:default="cluster.local"
	// +kubebuilder:validation:MaxLength=253
	// +optional
	ClusterDomain string `json:"clusterDomain,omitempty"`

	// Revocation refuses certificates of this cluster: at the handshake, at
	// Renew and on open streams, which every relay-server replica closes
	// within a second. relayctl revoke writes it.
	// +optional
	Revocation *Revocation `json:"revocation,omitempty"`
}

// MaxRevokedSerials bounds spec.revocation.serials; past it, revoke the
// whole cluster with issuedBefore.
const MaxRevokedSerials = 256

// Revocation says which certificates of a cluster are refused.
type Revocation struct {
	// IssuedBefore refuses every certificate of the cluster issued before
	// it. The issue time of a certificate relay-server signed is its
	// NotBefore plus the signer's backdate; of any other, its NotBefore.
	// +optional
	IssuedBefore *metav1.Time `json:"issuedBefore,omitempty"`

	// Serials refuses the certificates with these serial numbers, each in
	// lowercase hexadecimal without leading zeros or colons.
	// +kubebuilder:validation:MaxItems=256
	// +kubebuilder:validation:items:Pattern=`^[1-9a-f][0-9a-f]{0,39}$`
	// +kubebuilder:validation:items:MaxLength=40
	// +listType=set
	// +optional
	Serials []string `json:"serials,omitempty"`
}

// KubernetesClusterStatus is what the relay server observed of the cluster.
type KubernetesClusterStatus struct {
	// ObservedGeneration is the generation the status was written for.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// ClientCertificateNotAfter is when the cluster's current client
	// certificate, as last issued or seen by the server, expires.
	// +optional
	ClientCertificateNotAfter *metav1.Time `json:"clientCertificateNotAfter,omitempty"`

	// Conditions are the cluster's Registered and Connected conditions.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// KubernetesClusterList is a list of KubernetesCluster.
//
// +kubebuilder:object:root=true
type KubernetesClusterList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []KubernetesCluster `json:"items"`
}
