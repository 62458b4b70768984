// Package certgen generates the certificate architectures of the reference
// (one root and one intermediate, one root and two intermediates, separate
// roots) as Kubernetes Secrets for the management cluster and each workload
// cluster, and writes them as a YAML stream or as kustomize folders. It only
// arranges what pkg/pki makes and checks: relayctl gen is its one caller,
// and the secrets it returns are the ones relay-server, relay-agent and the
// admission webhook read.
package certgen
