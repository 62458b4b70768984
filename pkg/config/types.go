package config

import (
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Defaults shared by the server and the agent, from the compatibility table.
const (
	DefaultNamespace        = "gloo-mesh"
	DefaultAuthority        = "gloo-mesh-mgmt-server.gloo-mesh"
	DefaultRootTLSSecret    = "relay-root-tls-secret"
	DefaultServerTLSSecret  = "relay-server-tls-secret"
	DefaultSigningTLSSecret = "relay-tls-signing-secret"
	DefaultTokenSecret      = "relay-identity-token-secret"
	DefaultTokenKey         = "token"
	DefaultClientTLSSecret  = "relay-client-tls-secret"
	DefaultListenAddress    = ":9900"
	DefaultMetricsAddress   = ":9091"
	// DefaultClientCertificateTTL is one year, the client certificate lifetime
	// the compatible product documents.
	DefaultClientCertificateTTL = 365 * 24 * time.Hour
	// DefaultRotationGracePeriodRatio renews a client certificate when 35%
	// of its lifetime is left (up to 42% with the jitter that spreads a
	// fleet's renewals): 128 days before a one-year certificate expires.
	// It is above a third so that a healthy cluster never reaches the
	// point, a third of the lifetime left, at which relay-server records
	// CertificateExpiring and the monitoring component alerts. Set below a
	// third, renewal is later: the Event is recorded before each one (the
	// alert waits for the agent's own renewal time to pass).
	DefaultRotationGracePeriodRatio = 0.35
	// Lifetimes of the certificates relay-server generates, and renews
	// when DefaultRenewalRatio of the lifetime is left.
	DefaultRootCertificateTTL    = 10 * 365 * 24 * time.Hour
	DefaultSigningCertificateTTL = 5 * 365 * 24 * time.Hour
	DefaultServerCertificateTTL  = 2 * 365 * 24 * time.Hour
	DefaultRenewalRatio          = 0.35
	// DefaultRootRotationOverlap is the least time a root rotation spends
	// in Prepare (the new root trusted, not yet used) and in Activate
	// before the old root may leave.
	DefaultRootRotationOverlap = 24 * time.Hour
	// DefaultRenewalBudget is how many renewals per second relay-server
	// asks agents for when it spreads them (after a CA change).
	DefaultRenewalBudget = 10
)

// SecretRef names a secret; an empty namespace means the component's own.
type SecretRef struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace,omitempty"`
}

// TokenSecretRef names the identity token secret and the key holding it.
type TokenSecretRef struct {
	SecretRef
	Key string `json:"key"`
}

// Server is relay-server's configuration.
type Server struct {
	// Namespace holds the relay secrets and KubernetesClusters.
	Namespace string `json:"namespace"`
	// DisableCa turns off the built-in CA: no signing, no generation; agents
	// must be given client certificates (for example by cert-manager).
	DisableCa bool `json:"disableCa"`
	// DisableCaCertGeneration keeps the CA but never creates the root,
	// intermediate or server certificate secrets: they must be provided.
	DisableCaCertGeneration bool `json:"disableCaCertGeneration"`
	// DisableTokenGeneration never creates the identity token secret.
	DisableTokenGeneration bool           `json:"disableTokenGeneration"`
	SigningTLSSecret       SecretRef      `json:"signingTlsSecret"`
	TLSSecret              SecretRef      `json:"tlsSecret"`
	RootTLSSecret          SecretRef      `json:"rootTlsSecret"`
	TokenSecret            TokenSecretRef `json:"tokenSecret"`
	// Authority is the SNI name agents dial; the server certificate covers it.
	Authority string `json:"authority"`
	// Insecure serves plaintext gRPC with no certificates at all.
	Insecure bool `json:"insecure"`
	// ListenAddress is the relay gRPC address.
	ListenAddress string `json:"listenAddress"`
	// MetricsAddress serves /metrics, /healthz and /readyz.
	MetricsAddress string `json:"metricsAddress"`
	// ClientCertificateTTL is the lifetime of the client certificates the
	// server signs, capped by the intermediate's own expiry.
	ClientCertificateTTL metav1.Duration `json:"clientCertificateTTL"`
	// MaxConcurrentSigning caps Bootstrap and Renew calls in flight across
	// all peers; more are refused at once with ResourceExhausted.
	MaxConcurrentSigning int `json:"maxConcurrentSigning"`
	// PeerSigningRate is how many Bootstrap calls one peer address may make
	// per second, with PeerSigningBurst at once. Renew, whose caller has
	// proved its cluster, is limited per cluster instead (ClusterRenewRate).
	PeerSigningRate  float64 `json:"peerSigningRate"`
	PeerSigningBurst int     `json:"peerSigningBurst"`
	// DisableSharedToken refuses every Bootstrap made with the shared
	// identity token of TokenSecret: each cluster must then bootstrap with
	// its own token (relayctl register). While it is allowed, the shared
	// token bootstraps each cluster at most once.
	DisableSharedToken bool `json:"disableSharedToken"`
	// ClientIssuerSecret names a secret in Namespace whose ca.crt holds the
	// CA certificates allowed to issue client certificates, for setups that
	// bring their own issuer (cert-manager, Vault). The server's own
	// signing CA (current and previous) is always allowed while the CA is
	// enabled; no other CA under the relay root is.
	ClientIssuerSecret string `json:"clientIssuerSecret"`
	// ClusterRenewRate is how many Renew calls one cluster may make per
	// second, with ClusterRenewBurst at once, whatever address they come
	// from.
	ClusterRenewRate  float64 `json:"clusterRenewRate"`
	ClusterRenewBurst int     `json:"clusterRenewBurst"`
	// ClusterPushRate is how many push messages one cluster may send per
	// second, with ClusterPushBurst at once, over all its streams.
	ClusterPushRate  float64 `json:"clusterPushRate"`
	ClusterPushBurst int     `json:"clusterPushBurst"`
	// MaxStreamsPerCluster caps the open push and pull streams of one
	// cluster on one server replica.
	MaxStreamsPerCluster int `json:"maxStreamsPerCluster"`
	// EnableProfiling serves Go's profiles under /debug/pprof/ on the
	// metrics address. Off by default.
	EnableProfiling bool `json:"enableProfiling"`
	// LeaderElection makes one replica, the holder of the Lease
	// relay-server in Namespace, derive each KubernetesCluster's
	// conditions from the replicas' entries and remove the entries of
	// replicas that are gone. Without it this replica does so alone.
	LeaderElection bool `json:"leaderElection"`
	// ReplicaName names this replica in KubernetesCluster status and in its
	// replica Lease; the manifests set it to the pod's name (POD_NAME).
	// Empty means $POD_NAME, then the host name.
	ReplicaName string `json:"replicaName,omitempty"`
	// RootCertificateTTL, SigningCertificateTTL and ServerCertificateTTL
	// are the lifetimes of the root, signing intermediate and server
	// certificates relay-server generates. It renews each when
	// RootRenewalRatio, SigningRenewalRatio or ServerRenewalRatio of its
	// lifetime is left. Certificates it did not generate are never renewed.
	RootCertificateTTL    metav1.Duration `json:"rootCertificateTTL"`
	SigningCertificateTTL metav1.Duration `json:"signingCertificateTTL"`
	ServerCertificateTTL  metav1.Duration `json:"serverCertificateTTL"`
	RootRenewalRatio      float64         `json:"rootRenewalRatio"`
	SigningRenewalRatio   float64         `json:"signingRenewalRatio"`
	ServerRenewalRatio    float64         `json:"serverRenewalRatio"`
	// RootRotationOverlap is the least time a root rotation spends in
	// Prepare and in Activate, on top of waiting for every connected agent
	// to acknowledge the new bundle and for no live client certificate to
	// chain to the old root.
	RootRotationOverlap metav1.Duration `json:"rootRotationOverlap"`
	// RenewalBudget is how many renewals per second relay-server asks
	// agents for when it spreads a fleet's renewals (after a change of
	// signing CA); agents it says nothing to renew on their own schedule.
	RenewalBudget float64 `json:"renewalBudget"`
}

// MaxReplicaName bounds ReplicaName, which becomes part of a Lease name
// and of a field manager name.
const MaxReplicaName = 100

// Replica returns ReplicaName, or else $POD_NAME, or else the host name
// (each cut to MaxReplicaName), as getenv and hostname tell them.
func (s *Server) Replica(getenv func(string) string, hostname func() (string, error)) string {
	name := s.ReplicaName
	if name == "" {
		name = getenv("POD_NAME")
	}
	if name == "" {
		name, _ = hostname()
	}
	if name == "" {
		name = "relay-server"
	}
	return strings.ToLower(name[:min(len(name), MaxReplicaName)])
}

// Agent is relay-agent's configuration.
type Agent struct {
	// Cluster is this workload cluster's registered name.
	Cluster string `json:"cluster"`
	// Namespace holds the agent's relay secrets and its Lease.
	Namespace string `json:"namespace"`
	// ServerAddress is host:port of relay-server's gRPC endpoint.
	ServerAddress string `json:"serverAddress"`
	// Authority is the SNI name; it must match the server certificate.
	Authority       string         `json:"authority"`
	ClientTLSSecret SecretRef      `json:"clientTlsSecret"`
	RootTLSSecret   SecretRef      `json:"rootTlsSecret"`
	TokenSecret     TokenSecretRef `json:"tokenSecret"`
	// ClientTLSSecretRotationGracePeriodRatio renews the client certificate
	// when this fraction of its lifetime is left.
	ClientTLSSecretRotationGracePeriodRatio float64 `json:"clientTlsSecretRotationGracePeriodRatio"`
	// Insecure dials plaintext gRPC with no certificates at all.
	Insecure bool `json:"insecure"`
	// MetricsAddress serves /metrics, /healthz and /readyz.
	MetricsAddress string `json:"metricsAddress"`
	// LeaderElection runs the rotator only on the replica holding the Lease.
	LeaderElection bool `json:"leaderElection"`
	// FederatedTrust takes part in RootTrustPolicies: the agent makes
	// Istio's intermediate CA key in this cluster, has it signed by the
	// server and writes IstioCASecret. Off by default: it needs the RBAC of
	// manifests/components/istio-federated-trust.
	FederatedTrust bool `json:"federatedTrust"`
	// IstioCASecret is Istio's plug-in CA secret, istio-system/cacerts.
	IstioCASecret SecretRef `json:"istioCaSecret"`
	// TrustBundleDir, when set, is a folder of PEM files whose
	// certificates together are the roots the agent verifies the server
	// with: relay-webhook mounts the relay ClusterTrustBundle and
	// relay-root-tls-secret's ca.crt there. The agent watches it, so a root
	// rotation reaches it without a restart, and then needs no read access
	// to the root secret. Empty means the agent reads RootTLSSecret.
	TrustBundleDir string `json:"trustBundleDir,omitempty"`
}

// DefaultServer returns the server's default settings: the documented
// secret names, authority and ports.
func DefaultServer() Server {
	return Server{
		Namespace:             DefaultNamespace,
		SigningTLSSecret:      SecretRef{Name: DefaultSigningTLSSecret},
		TLSSecret:             SecretRef{Name: DefaultServerTLSSecret},
		RootTLSSecret:         SecretRef{Name: DefaultRootTLSSecret},
		TokenSecret:           TokenSecretRef{SecretRef: SecretRef{Name: DefaultTokenSecret}, Key: DefaultTokenKey},
		Authority:             DefaultAuthority,
		ListenAddress:         DefaultListenAddress,
		MetricsAddress:        DefaultMetricsAddress,
		ClientCertificateTTL:  metav1.Duration{Duration: DefaultClientCertificateTTL},
		MaxConcurrentSigning:  64,
		PeerSigningRate:       5,
		PeerSigningBurst:      10,
		ClusterRenewRate:      0.1,
		ClusterRenewBurst:     5,
		ClusterPushRate:       10,
		ClusterPushBurst:      100,
		MaxStreamsPerCluster:  16,
		LeaderElection:        true,
		RootCertificateTTL:    metav1.Duration{Duration: DefaultRootCertificateTTL},
		SigningCertificateTTL: metav1.Duration{Duration: DefaultSigningCertificateTTL},
		ServerCertificateTTL:  metav1.Duration{Duration: DefaultServerCertificateTTL},
		RootRenewalRatio:      DefaultRenewalRatio,
		SigningRenewalRatio:   DefaultRenewalRatio,
		ServerRenewalRatio:    DefaultRenewalRatio,
		RootRotationOverlap:   metav1.Duration{Duration: DefaultRootRotationOverlap},
		RenewalBudget:         DefaultRenewalBudget,
	}
}

// DefaultAgent returns the agent's default settings: the documented secret
// names and authority.
func DefaultAgent() Agent {
	return Agent{
		Namespace:                               DefaultNamespace,
		Authority:                               DefaultAuthority,
		ClientTLSSecret:                         SecretRef{Name: DefaultClientTLSSecret},
		RootTLSSecret:                           SecretRef{Name: DefaultRootTLSSecret},
		TokenSecret:                             TokenSecretRef{SecretRef: SecretRef{Name: DefaultTokenSecret}, Key: DefaultTokenKey},
		ClientTLSSecretRotationGracePeriodRatio: DefaultRotationGracePeriodRatio,
		MetricsAddress:                          DefaultMetricsAddress,
		LeaderElection:                          true,
		IstioCASecret:                           SecretRef{Name: DefaultIstioCASecret, Namespace: DefaultIstioNamespace},
	}
}

// NamespacedName returns the secret's name and namespace; an empty
// namespace in r means ns, the component's own.
func (r SecretRef) NamespacedName(ns string) types.NamespacedName {
	if r.Namespace != "" {
		ns = r.Namespace
	}
	return types.NamespacedName{Namespace: ns, Name: r.Name}
}

// Environment variables relay-webhook injects into agent pods, read by
// relay-agent and relay-webhook as the defaults of --cluster,
// --server-address and --authority (a config file and flags win over
// them). The workload overlay sets them for both from one settings file.
const (
	EnvCluster       = "MESHRELAY_CLUSTER"
	EnvServerAddress = "MESHRELAY_SERVER_ADDRESS"
	EnvAuthority     = "MESHRELAY_AUTHORITY"
	// EnvTrustBundleDir is the default of relay-agent's --trust-bundle-dir;
	// relay-webhook sets it where it mounts the trust bundle.
	EnvTrustBundleDir = "MESHRELAY_TRUST_BUNDLE_DIR"
)

// ApplyEnvironment sets a's cluster, server address, authority and trust
// bundle folder from the variables getenv returns, where they are set.
func (a *Agent) ApplyEnvironment(getenv func(string) string) {
	applyEnvironment(getenv, &a.Cluster, &a.ServerAddress, &a.Authority)
	if v := getenv(EnvTrustBundleDir); v != "" {
		a.TrustBundleDir = v
	}
}

// ApplyEnvironment sets w's cluster, server address and authority from the
// variables getenv returns, where they are set.
func (w *Webhook) ApplyEnvironment(getenv func(string) string) {
	applyEnvironment(getenv, &w.Cluster, &w.ServerAddress, &w.Authority)
}

func applyEnvironment(getenv func(string) string, cluster, serverAddress, authority *string) {
	for _, e := range []struct {
		name string
		into *string
	}{{EnvCluster, cluster}, {EnvServerAddress, serverAddress}, {EnvAuthority, authority}} {
		if v := getenv(e.name); v != "" {
			*e.into = v
		}
	}
}
