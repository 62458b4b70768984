package v1alpha1

// Well-known label and annotation keys meshrelay reads and writes, in one
// place so that every component and the manifests agree.
const (
	// InjectLabel, set to InjectLabelValue on a pod, asks relay-webhook to
	// inject the relay secrets' volumes and settings into it.
	InjectLabel      = "meshrelay.dev/inject"
	InjectLabelValue = "relay-agent"

	// ManagedElsewhereAnnotation, set to "true" on a relay secret, marks it
	// as written by the user's own tooling: relay-agent never rotates it.
	ManagedElsewhereAnnotation = "meshrelay.dev/managed-elsewhere"

	// AllowChainBreakAnnotation, set to "true" on relay-root-tls-secret or
	// relay-tls-signing-secret, admits an update that leaves certificates
	// already issued without a valid chain: for replacing a compromised CA
	// on purpose, knowing that every agent must get a new certificate.
	AllowChainBreakAnnotation = "meshrelay.dev/allow-chain-break"

	// GeneratedLabel marks a secret relay-server generated.
	GeneratedLabel = "meshrelay.dev/generated"

	// RootTrustPolicyKey names the RootTrustPolicy a secret belongs to: a
	// label on the root relay-server generated for it, an annotation on the
	// istio-system/cacerts relay-agent wrote under it.
	RootTrustPolicyKey = "meshrelay.dev/root-trust-policy"

	// CACertsRevisionAnnotation records, on a restarted workload's pod
	// template, the cacerts revision it was restarted for.
	CACertsRevisionAnnotation = "meshrelay.dev/cacerts-revision"

	// ManagedByAnnotation names the relay-webhook that manages a serving
	// certificate secret.
	ManagedByAnnotation = "meshrelay.dev/managed-by"

	// BootstrapTokenHashAnnotation, on a KubernetesCluster, is the lowercase
	// hex SHA-256 of the cluster's unused bootstrap token (relayctl register
	// writes it; relay-server removes it when the token is used). The token
	// itself is kept only on the workload cluster.
	BootstrapTokenHashAnnotation = "meshrelay.dev/bootstrap-token-sha256"

	// BootstrapTokenExpiresAnnotation, on a KubernetesCluster, is when its
	// unused bootstrap token expires (RFC 3339).
	BootstrapTokenExpiresAnnotation = "meshrelay.dev/bootstrap-token-expires"

	// BootstrappedAnnotation, on a KubernetesCluster, is when relay-server
	// last consumed a bootstrap token for it (RFC 3339). The shared identity
	// token refuses a cluster that has it.
	BootstrappedAnnotation = "meshrelay.dev/bootstrapped"

	// BootstrapTokenUsedAnnotation, on relay-client-tls-secret, is the
	// SHA-256 (lowercase hex) of the bootstrap token relay-agent obtained the
	// certificate with; renewals keep it. A token secret holding another
	// token holds a fresh one (relayctl register ran again): the agent
	// bootstraps with it even while its certificate is still valid, which is
	// how a revoked certificate is replaced.
	BootstrapTokenUsedAnnotation = "meshrelay.dev/bootstrap-token-used-sha256"

	// ReplicaLeaseLabel marks the Lease each relay-server replica renews
	// while it runs, relay-server-replica-<replica>: a replica whose Lease
	// has expired is gone, and its entries of KubernetesCluster status are
	// removed by the leader.
	ReplicaLeaseLabel = "meshrelay.dev/relay-server-replica"

	// AllowRootRemovalAnnotation, set to "true" on relay-root-tls-secret
	// of the management cluster, admits an update or a delete that removes
	// a root from ca.crt while a live client certificate of some cluster
	// still chains to it: that cluster's agent can no longer connect until
	// it bootstraps again.
	AllowRootRemovalAnnotation = "meshrelay.dev/allow-root-removal"

	// TrustBundleSignerName is the signer name of the ClusterTrustBundle
	// meshrelay publishes in each cluster, holding the relay roots.
	TrustBundleSignerName = "meshrelay.dev/relay-root"

	// TrustBundleLabel, on that ClusterTrustBundle, is the namespace of the
	// relay install it belongs to, so that two installs in one cluster
	// select their own.
	TrustBundleLabel = "meshrelay.dev/relay-namespace"
)

// TrustBundleName is the name of the ClusterTrustBundle of the relay
// install in namespace: a bundle with a signer name must be named with the
// signer name's "/" as ":" and a suffix.
func TrustBundleName(namespace string) string {
	return "meshrelay.dev:relay-root:" + namespace
}
