package config

import (
	"github.com/spf13/pflag"
)

// BindServer binds s's settings to fs as flags, with s's current values as
// defaults.
func BindServer(fs *pflag.FlagSet, s *Server) {
	fs.StringVar(&s.Namespace, "namespace", s.Namespace, "namespace of the relay secrets and KubernetesClusters")
	fs.BoolVar(&s.DisableCa, "disable-ca", s.DisableCa, "turn off the built-in CA: never sign, never generate (disableCa)")
	fs.BoolVar(&s.DisableCaCertGeneration, "disable-ca-cert-generation", s.DisableCaCertGeneration, "never create the root, signing and server certificate secrets; they must exist (disableCaCertGeneration)")
	fs.BoolVar(&s.DisableTokenGeneration, "disable-token-generation", s.DisableTokenGeneration, "never create the identity token secret (disableTokenGeneration)")
	bindRef(fs, "signing-tls-secret", "intermediate CA secret that signs client certificates (signingTlsSecret)", &s.SigningTLSSecret)
	bindRef(fs, "tls-secret", "server certificate secret (tlsSecret)", &s.TLSSecret)
	bindRef(fs, "root-tls-secret", "root CA secret (rootTlsSecret)", &s.RootTLSSecret)
	bindToken(fs, &s.TokenSecret)
	fs.StringVar(&s.Authority, "authority", s.Authority, "SNI name agents dial; the server certificate covers it (authority)")
	fs.BoolVar(&s.Insecure, "insecure", s.Insecure, "serve plaintext gRPC without TLS or authentication, signing with a CA made in memory at start (never the signing secret), and serve no RootTrustPolicy: for tests only (insecure)")
	fs.StringVar(&s.ListenAddress, "listen-address", s.ListenAddress, "relay gRPC address")
	fs.StringVar(&s.MetricsAddress, "metrics-address", s.MetricsAddress, "address of /metrics, /healthz and /readyz")
	fs.DurationVar(&s.ClientCertificateTTL.Duration, "client-certificate-ttl", s.ClientCertificateTTL.Duration, "lifetime of signed client certificates, capped by the intermediate's expiry")
	fs.IntVar(&s.MaxConcurrentSigning, "max-concurrent-signing", s.MaxConcurrentSigning, "Bootstrap and Renew calls in flight across all agents; more get ResourceExhausted")
	fs.Float64Var(&s.PeerSigningRate, "peer-signing-rate", s.PeerSigningRate, "Bootstrap calls per second allowed from one peer address (Renew is limited per cluster: --cluster-renew-rate)")
	fs.IntVar(&s.PeerSigningBurst, "peer-signing-burst", s.PeerSigningBurst, "Bootstrap calls one peer address may make at once")
	fs.BoolVar(&s.DisableSharedToken, "disable-shared-token", s.DisableSharedToken, "refuse bootstraps with the shared identity token: every cluster bootstraps with its own token from relayctl register (disableSharedToken)")
	fs.StringVar(&s.ClientIssuerSecret, "client-issuer-secret", s.ClientIssuerSecret, "secret in --namespace whose ca.crt lists the CAs that may issue client certificates, for a cert-manager or Vault issuer (clientIssuerSecret)")
	fs.Float64Var(&s.ClusterRenewRate, "cluster-renew-rate", s.ClusterRenewRate, "Renew calls per second allowed for one cluster, from any address")
	fs.IntVar(&s.ClusterRenewBurst, "cluster-renew-burst", s.ClusterRenewBurst, "Renew calls one cluster may make at once")
	fs.Float64Var(&s.ClusterPushRate, "cluster-push-rate", s.ClusterPushRate, "push messages per second allowed for one cluster over all its streams")
	fs.IntVar(&s.ClusterPushBurst, "cluster-push-burst", s.ClusterPushBurst, "push messages one cluster may send at once")
	fs.IntVar(&s.MaxStreamsPerCluster, "max-streams-per-cluster", s.MaxStreamsPerCluster, "open push and pull streams allowed for one cluster on one replica")
	fs.BoolVar(&s.EnableProfiling, "enable-profiling", s.EnableProfiling, "serve Go's profiles under /debug/pprof/ on the metrics address, unauthenticated: anyone who reaches that port can read them (off by default)")
	fs.BoolVar(&s.LeaderElection, "leader-election", s.LeaderElection, "let only the replica holding the Lease relay-server derive KubernetesCluster conditions and clean up after replicas that are gone")
	fs.StringVar(&s.ReplicaName, "replica-name", s.ReplicaName, "this replica's name in KubernetesCluster status and its replica Lease (default $POD_NAME, then the host name)")
	fs.DurationVar(&s.RootCertificateTTL.Duration, "root-certificate-ttl", s.RootCertificateTTL.Duration, "lifetime of the root CA relay-server generates (rootCertificateTTL)")
	fs.DurationVar(&s.SigningCertificateTTL.Duration, "signing-certificate-ttl", s.SigningCertificateTTL.Duration, "lifetime of the signing intermediate relay-server generates, capped by the root's expiry (signingCertificateTTL)")
	fs.DurationVar(&s.ServerCertificateTTL.Duration, "server-certificate-ttl", s.ServerCertificateTTL.Duration, "lifetime of the server certificate relay-server generates, capped by the root's expiry (serverCertificateTTL)")
	fs.Float64Var(&s.RootRenewalRatio, "root-renewal-ratio", s.RootRenewalRatio, "start a root rotation when this fraction of the generated root's lifetime is left (rootRenewalRatio)")
	fs.Float64Var(&s.SigningRenewalRatio, "signing-renewal-ratio", s.SigningRenewalRatio, "renew the generated signing intermediate when this fraction of its lifetime is left (signingRenewalRatio)")
	fs.Float64Var(&s.ServerRenewalRatio, "server-renewal-ratio", s.ServerRenewalRatio, "renew the generated server certificate when this fraction of its lifetime is left (serverRenewalRatio)")
	fs.DurationVar(&s.RootRotationOverlap.Duration, "root-rotation-overlap", s.RootRotationOverlap.Duration, "least time a root rotation spends in Prepare and in Activate, beside waiting for the agents (rootRotationOverlap)")
	fs.Float64Var(&s.RenewalBudget, "renewal-budget", s.RenewalBudget, "renewals per second relay-server asks agents for when it spreads a fleet's renewals after a change of signing CA (renewalBudget)")
}

// BindAgent binds a's settings to fs as flags, with a's current values as
// defaults.
func BindAgent(fs *pflag.FlagSet, a *Agent) {
	fs.StringVar(&a.Cluster, "cluster", a.Cluster, "this workload cluster's registered name (a KubernetesCluster on the management cluster)")
	fs.StringVar(&a.Namespace, "namespace", a.Namespace, "namespace of the agent's relay secrets and Lease")
	fs.StringVar(&a.ServerAddress, "server-address", a.ServerAddress, "relay-server host:port (serverAddress)")
	fs.StringVar(&a.Authority, "authority", a.Authority, "SNI name to dial; must match the server certificate (authority)")
	bindRef(fs, "client-tls-secret", "client certificate secret (clientTlsSecret)", &a.ClientTLSSecret)
	bindRef(fs, "root-tls-secret", "root CA secret that verifies the server; may hold tls.key to self-issue (rootTlsSecret)", &a.RootTLSSecret)
	bindToken(fs, &a.TokenSecret)
	fs.Float64Var(&a.ClientTLSSecretRotationGracePeriodRatio, "client-tls-secret-rotation-grace-period-ratio", a.ClientTLSSecretRotationGracePeriodRatio, "renew when this fraction of the certificate's lifetime is left (clientTlsSecretRotationGracePeriodRatio)")
	fs.BoolVar(&a.Insecure, "insecure", a.Insecure, "dial plaintext gRPC without TLS: for tests only (insecure)")
	fs.StringVar(&a.MetricsAddress, "metrics-address", a.MetricsAddress, "address of /metrics, /healthz and /readyz")
	fs.BoolVar(&a.LeaderElection, "leader-election", a.LeaderElection, "run the rotator only on the replica holding the Lease")
	fs.BoolVar(&a.FederatedTrust, "federated-trust", a.FederatedTrust, "take part in RootTrustPolicies: make Istio's intermediate CA key here and write it to the Istio CA secret (needs components/istio-federated-trust's RBAC)")
	bindRef(fs, "istio-ca-secret", "Istio's plug-in CA secret (istioCaSecret)", &a.IstioCASecret)
	fs.StringVar(&a.TrustBundleDir, "trust-bundle-dir", a.TrustBundleDir, "folder of PEM files (the mounted relay trust bundle) whose certificates are the roots to verify the server with, watched for changes; empty reads --root-tls-secret instead (trustBundleDir; default $"+EnvTrustBundleDir+")")
}

func bindRef(fs *pflag.FlagSet, name, usage string, r *SecretRef) {
	fs.StringVar(&r.Name, name, r.Name, "name of the "+usage)
	fs.StringVar(&r.Namespace, name+"-namespace", r.Namespace, "namespace of the "+usage+"; empty means --namespace")
}

func bindToken(fs *pflag.FlagSet, r *TokenSecretRef) {
	fs.StringVar(&r.Name, "token-secret", r.Name, "name of the identity token secret (tokenSecret.name)")
	fs.StringVar(&r.Key, "token-secret-key", r.Key, "key of the token in that secret (tokenSecret.key)")
	fs.StringVar(&r.Namespace, "token-secret-namespace", r.Namespace, "namespace of that secret; empty means --namespace (tokenSecret.namespace)")
}
