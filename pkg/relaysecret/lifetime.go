package relaysecret

import "time"

// Default lifetimes of the relay certificates that relayctl gen generates,
// the same as relay-server's defaults (config.DefaultRootCertificateTTL and
// the others), which relay-server renews when a share of the lifetime is
// left. A client certificate's default is config.DefaultClientCertificateTTL.
const (
	// RootLifetime is the lifetime of a generated relay root CA
	// (relay-root-tls-secret): ten years.
	RootLifetime = 10 * 365 * 24 * time.Hour
	// SigningLifetime is the lifetime of a generated signing intermediate
	// CA (relay-tls-signing-secret): five years, within the root's.
	SigningLifetime = 5 * 365 * 24 * time.Hour
	// ServerLifetime is the lifetime of a generated relay server
	// certificate (relay-server-tls-secret): two years.
	ServerLifetime = 2 * 365 * 24 * time.Hour
	// TrustRootLifetime is the lifetime of the Istio root relay-server
	// generates for a RootTrustPolicy (root-trust.<policy>): ten years, as a
	// relay root.
	TrustRootLifetime = RootLifetime
	// IstioIntermediateLifetime is the lifetime of a cluster's Istio
	// intermediate CA when its RootTrustPolicy sets none: a year, renewed
	// like a client certificate.
	IstioIntermediateLifetime = 365 * 24 * time.Hour
)

// Subject of the relay CAs that relay-server and relayctl gen generate.
const (
	// RootCommonName is the common name of a generated relay root CA.
	RootCommonName = "meshrelay-root-ca"
	// SigningCommonName is the common name of a generated signing
	// intermediate CA.
	SigningCommonName = "meshrelay-signing-ca"
	// Organization is the organization of every generated relay CA.
	Organization = "meshrelay"
)
