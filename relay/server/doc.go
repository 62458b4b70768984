// Package server is the management side of the relay: it bootstraps the CA
// into secrets, checks identity tokens, signs agents' CSRs with the
// intermediate, serves the Relay gRPC API over mutual TLS with credentials
// that reload when their secrets change, tracks which clusters are
// connected, and, for federated trust, signs each workload cluster's Istio
// intermediate CA under its RootTrustPolicy's root.
package server
