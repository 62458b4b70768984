package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// RelayTrust is the life of the relay's own certificates: the root that
// agents trust, the signing intermediate that issues their client
// certificates and relay-server's serving certificate. relay-server's
// leader keeps one, named RelayTrustName, in its namespace: it renews each
// certificate it generated at its point of renewal and replaces the root
// in phases (Prepare, Activate, Retire), recording in status where it is
// and which clusters it waits for. Its spec asks for a rotation now
// (relayctl rotate root|intermediate|server).
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:categories=meshrelay
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Roots",type=integer,JSONPath=`.status.bundle.roots`
// +kubebuilder:printcolumn:name="Waiting-For",type=integer,JSONPath=`.status.pendingCount`
// +kubebuilder:printcolumn:name="Root-Expires",type=date,JSONPath=`.status.root.notAfter`
// +kubebuilder:printcolumn:name="Server-Expires",type=date,JSONPath=`.status.server.notAfter`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type RelayTrust struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   RelayTrustSpec   `json:"spec,omitempty"`
	Status RelayTrustStatus `json:"status,omitempty"`
}

// RelayTrustName is the name of the one RelayTrust relay-server acts on,
// in its namespace.
const RelayTrustName = "relay-server"

// RelayTrustSpec asks for rotations ahead of their schedule.
type RelayTrustSpec struct {
	// RotateRoot asks for a new root: it goes through every phase, each
	// waiting for what makes it safe.
	// +optional
	RotateRoot *RotationRequest `json:"rotateRoot,omitempty"`
	// RotateIntermediate asks for a new signing intermediate under the
	// current root.
	// +optional
	RotateIntermediate *RotationRequest `json:"rotateIntermediate,omitempty"`
	// RotateServer asks for a new serving certificate.
	// +optional
	RotateServer *RotationRequest `json:"rotateServer,omitempty"`
}

// RotationRequest is one request for a rotation. relay-server acts on a
// request once: when RequestedAt is after the last rotation of that
// certificate.
type RotationRequest struct {
	// RequestedAt is when the rotation was asked for.
	RequestedAt metav1.Time `json:"requestedAt"`
	// Now skips the minimum time a root rotation otherwise spends in
	// Prepare and before Retire (rootRotationOverlap). It never skips what
	// keeps handshakes working: every connected agent acknowledging the new
	// bundle, and no live client certificate chaining to the old root.
	// +optional
	Now bool `json:"now,omitempty"`
	// Reason is shown in Events and the log.
	// +kubebuilder:validation:MaxLength=256
	// +optional
	Reason string `json:"reason,omitempty"`
}

// RotationPhase is where a root rotation stands.
// +kubebuilder:validation:Enum=Stable;Prepare;Activate;Retire
type RotationPhase string

// The phases of a root rotation.
const (
	// PhaseStable: one root; nothing in progress.
	PhaseStable RotationPhase = "Stable"
	// PhasePrepare: the new root is in the trust bundle beside the old one;
	// the old root still signs. Waiting for every connected agent to
	// acknowledge the bundle.
	PhasePrepare RotationPhase = "Prepare"
	// PhaseActivate: a new intermediate under the new root signs, and the
	// serving certificate chains to the new root. Agents are told to renew;
	// waiting for no live client certificate to chain to the old root.
	PhaseActivate RotationPhase = "Activate"
	// PhaseRetire: the old root is leaving the bundle; waiting for every
	// connected agent to acknowledge the bundle without it.
	PhaseRetire RotationPhase = "Retire"
)

// RelayTrustStatus is where the relay's certificates stand.
type RelayTrustStatus struct {
	// ObservedGeneration is the spec generation acted on.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Phase is where a root rotation stands; Stable when none is under way.
	// +optional
	Phase RotationPhase `json:"phase,omitempty"`
	// PhaseSince is when Phase was entered.
	// +optional
	PhaseSince *metav1.Time `json:"phaseSince,omitempty"`
	// RotationStartedAt is when the root rotation under way started; a
	// spec.rotateRoot request with now set skips the overlap only for a
	// rotation it started or that was under way when it was made.
	// +optional
	RotationStartedAt *metav1.Time `json:"rotationStartedAt,omitempty"`
	// Root is the root that signs (the newest one from Activate on);
	// Incoming the root being added (Prepare), Outgoing the one being
	// removed (Activate, Retire).
	// +optional
	Root *TrustCertificate `json:"root,omitempty"`
	// +optional
	Incoming *TrustCertificate `json:"incoming,omitempty"`
	// +optional
	Outgoing *TrustCertificate `json:"outgoing,omitempty"`
	// Intermediate is the signing intermediate; Server the serving
	// certificate.
	// +optional
	Intermediate *TrustCertificate `json:"intermediate,omitempty"`
	// +optional
	Server *TrustCertificate `json:"server,omitempty"`
	// Bundle is the trust bundle agents are sent.
	// +optional
	Bundle *BundleStatus `json:"bundle,omitempty"`
	// Pending are the clusters the current phase waits for (at most 50,
	// in name order), each with why; PendingCount counts them all.
	// +kubebuilder:validation:MaxItems=50
	// +listType=map
	// +listMapKey=cluster
	// +optional
	Pending []PendingCluster `json:"pending,omitempty"`
	// +optional
	PendingCount int32 `json:"pendingCount,omitempty"`
	// ObservedRequests are the requestedAt of the last spec requests
	// relay-server acted on: a request whose requestedAt differs is new.
	// +optional
	ObservedRequests ObservedRequests `json:"observedRequests,omitempty"`
	// Rotations counts completed rotations since the RelayTrust was made.
	// +optional
	Rotations RotationCounts `json:"rotations,omitempty"`
	// Conditions: Ready (every certificate valid and renewed on time) and
	// Progressing (a rotation is under way).
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// TrustCertificate identifies one of the relay's certificates.
type TrustCertificate struct {
	// Secret is the secret that holds it.
	// +kubebuilder:validation:MaxLength=253
	Secret string `json:"secret"`
	// SHA256 is the hex SHA-256 of the certificate.
	// +kubebuilder:validation:MaxLength=64
	SHA256 string `json:"sha256"`
	// Subject is its subject common name.
	// +kubebuilder:validation:MaxLength=256
	// +optional
	Subject string `json:"subject,omitempty"`
	// NotBefore and NotAfter bound its validity.
	NotBefore metav1.Time `json:"notBefore"`
	NotAfter  metav1.Time `json:"notAfter"`
	// RenewAt is when relay-server renews it: empty for a certificate it
	// did not generate, which it never replaces.
	// +optional
	RenewAt *metav1.Time `json:"renewAt,omitempty"`
	// Generated says whether relay-server generated it, and so rotates it.
	// +optional
	Generated bool `json:"generated,omitempty"`
}

// BundleStatus is the trust bundle agents are sent.
type BundleStatus struct {
	// SHA256 is the hex SHA-256 of the bundle's PEM bytes, which agents
	// acknowledge.
	// +kubebuilder:validation:MaxLength=64
	SHA256 string `json:"sha256"`
	// Roots counts the roots in it.
	Roots int32 `json:"roots"`
	// Acknowledged counts the connected clusters whose agent acknowledged
	// it; Connected counts the connected clusters.
	Acknowledged int32 `json:"acknowledged"`
	Connected    int32 `json:"connected"`
}

// PendingCluster is a cluster a phase waits for.
type PendingCluster struct {
	// +kubebuilder:validation:MaxLength=253
	Cluster string `json:"cluster"`
	// Reason: BundleNotAcknowledged, ChainsToOldRoot or
	// IssuedByPreviousIntermediate.
	// +kubebuilder:validation:MaxLength=64
	Reason string `json:"reason"`
}

// Reasons a cluster holds a phase.
const (
	PendingBundleNotAcknowledged = "BundleNotAcknowledged"
	PendingChainsToOldRoot       = "ChainsToOldRoot"
	// PendingIssuedByPreviousIntermediate holds an intermediate rotation:
	// the cluster's live client certificate comes from the intermediate
	// the current one replaced, which the next rotation stops admitting.
	PendingIssuedByPreviousIntermediate = "IssuedByPreviousIntermediate"
)

// ObservedRequests are the requests acted on, by their requestedAt.
type ObservedRequests struct {
	// +optional
	Root *metav1.Time `json:"root,omitempty"`
	// +optional
	Intermediate *metav1.Time `json:"intermediate,omitempty"`
	// +optional
	Server *metav1.Time `json:"server,omitempty"`
}

// RotationCounts counts completed rotations.
type RotationCounts struct {
	// +optional
	Root int64 `json:"root,omitempty"`
	// +optional
	Intermediate int64 `json:"intermediate,omitempty"`
	// +optional
	Server int64 `json:"server,omitempty"`
}

// RelayTrustList is a list of RelayTrust.
//
// +kubebuilder:object:root=true
type RelayTrustList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []RelayTrust `json:"items"`
}
