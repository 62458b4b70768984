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
// +kubebuilder:printcolumn:name="Replicas",type=string,JSONPath=`.status.connectedReplicas`
// +kubebuilder:printcolumn:name="Cert-Expires",type=string,JSONPath=`.status.clientCertificate.notAfter`
// +kubebuilder:printcolumn:name="Last-Seen",type=date,priority=1,JSONPath=`.status.lastSeen`
// +kubebuilder:printcolumn:name="Agent",type=string,priority=1,JSONPath=`.status.agentVersion`
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
// Each relay-server replica writes only its own entry of Replicas (server-side
// apply, one field manager per replica); the leader replica derives the rest
// from them, and removes the entries of a replica whose lease has expired.
type KubernetesClusterStatus struct {
	// ObservedGeneration is the generation the status was written for.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// ClientCertificateNotAfter is when the cluster's current client
	// certificate, as last issued or seen by the server, expires.
	// +optional
	ClientCertificateNotAfter *metav1.Time `json:"clientCertificateNotAfter,omitempty"`

	// ClientCertificate is the cluster's newest client certificate that a
	// replica issued or saw at a handshake.
	// +optional
	ClientCertificate *CertificateSummary `json:"clientCertificate,omitempty"`

	// AgentVersion is the relay-agent version the cluster's newest stream
	// reported.
	// +kubebuilder:validation:MaxLength=128
	// +optional
	AgentVersion string `json:"agentVersion,omitempty"`

	// LastSeen is when a replica last heard from the cluster: a stream
	// opened or closed, a certificate issued.
	// +optional
	LastSeen *metav1.Time `json:"lastSeen,omitempty"`

	// ConnectedReplicas names, comma-separated, the live relay-server
	// replicas that hold both streams of the cluster, for kubectl's
	// Replicas column (which prints one value per object).
	// +kubebuilder:validation:MaxLength=1024
	// +optional
	ConnectedReplicas string `json:"connectedReplicas,omitempty"`

	// Replicas are the relay-server replicas that hold, or last held, the
	// cluster's streams, each written by that replica.
	// +listType=map
	// +listMapKey=replica
	// +kubebuilder:validation:MaxItems=64
	// +optional
	Replicas []ReplicaStatus `json:"replicas,omitempty"`
	// TrustBundleSHA256 is the trust bundle the cluster's agent last
	// acknowledged (the newest of the replicas' entries): the hex SHA-256
	// of the PEM roots it wrote into its own cluster. A root rotation
	// waits for every connected cluster to acknowledge the bundle holding
	// the new root.
	// +kubebuilder:validation:MaxLength=64
	// +optional
	TrustBundleSHA256 string `json:"trustBundleSHA256,omitempty"`

	// Conditions are Registered (the cluster has a registration, and
	// whether it has bootstrapped), Connected (a replica holds both its
	// push and pull streams) and CertificateValid (its newest client
	// certificate is unexpired and not revoked).
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// CertificateSummary identifies a certificate without holding it.
type CertificateSummary struct {
	// Serial is the serial number in lowercase hexadecimal.
	// +kubebuilder:validation:MaxLength=40
	Serial string `json:"serial"`
	// NotBefore and NotAfter bound the certificate's validity.
	NotBefore metav1.Time `json:"notBefore"`
	NotAfter  metav1.Time `json:"notAfter"`
	// IssuedAt is when it was issued, which spec.revocation.issuedBefore
	// is compared with: for a certificate relay-server signed, NotBefore
	// plus the signer's backdate.
	// +optional
	IssuedAt *metav1.Time `json:"issuedAt,omitempty"`
	// Issuer is the issuing CA's subject common name.
	// +kubebuilder:validation:MaxLength=256
	// +optional
	Issuer string `json:"issuer,omitempty"`
	// IssuerSHA256 is the hex SHA-256 of the issuing CA's certificate.
	// +kubebuilder:validation:MaxLength=64
	// +optional
	IssuerSHA256 string `json:"issuerSHA256,omitempty"`
	// RootSHA256 is the hex SHA-256 of the relay root the certificate
	// chains to. A root leaves the trust bundle only once no live client
	// certificate of any cluster chains to it.
	// +kubebuilder:validation:MaxLength=64
	// +optional
	RootSHA256 string `json:"rootSHA256,omitempty"`
}

// ReplicaStatus is what one relay-server replica knows of the cluster.
type ReplicaStatus struct {
	// Replica is the relay-server replica's name (its pod's name).
	// +kubebuilder:validation:MaxLength=253
	Replica string `json:"replica"`
	// PushStreams and PullStreams count the cluster's open streams on
	// this replica.
	PushStreams int32 `json:"pushStreams"`
	PullStreams int32 `json:"pullStreams"`
	// LastSeen is when this replica last heard from the cluster.
	// +optional
	LastSeen *metav1.Time `json:"lastSeen,omitempty"`
	// StartedAt names the replica's process that wrote the entry: when it
	// took the replica's Lease, whose acquireTime it also sets. The leader
	// counts the streams of an entry whose startedAt is before the Lease's
	// acquireTime as closed: a previous process under the same name (a
	// restarted container) left it. Absent from the entries of a
	// relay-server that does not record it.
	// +optional
	StartedAt *metav1.MicroTime `json:"startedAt,omitempty"`
	// AgentVersion is the relay-agent version its newest stream reported.
	// +kubebuilder:validation:MaxLength=128
	// +optional
	AgentVersion string `json:"agentVersion,omitempty"`
	// ClientCertificate is the newest client certificate of the cluster
	// this replica issued or saw at a handshake.
	// +optional
	ClientCertificate *CertificateSummary `json:"clientCertificate,omitempty"`
	// StreamCertificate is the oldest client certificate (by notBefore)
	// that the cluster's open streams on this replica presented, when it
	// is not clientCertificate: the one in use, older than the newest
	// when the agent could not store a certificate issued to it. A root
	// rotation or an intermediate renewal waits for the certificate in
	// use as for clientCertificate: this one, or clientCertificate while
	// the replica holds streams of the cluster and this is absent.
	// +optional
	StreamCertificate *CertificateSummary `json:"streamCertificate,omitempty"`
	// TrustBundleSHA256 is the trust bundle the cluster's agent last
	// acknowledged on this replica's streams: the hex SHA-256 of the PEM
	// roots it wrote into its own cluster.
	// +kubebuilder:validation:MaxLength=64
	// +optional
	TrustBundleSHA256 string `json:"trustBundleSHA256,omitempty"`
}

// Condition types of a KubernetesCluster.
const (
	ConditionRegistered       = "Registered"
	ConditionConnected        = "Connected"
	ConditionCertificateValid = "CertificateValid"
)

// KubernetesClusterList is a list of KubernetesCluster.
//
// +kubebuilder:object:root=true
type KubernetesClusterList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []KubernetesCluster `json:"items"`
}
