// Package pki is meshrelay's certificate work, with no Kubernetes and no
// gRPC, so that the relay server, the agent, the admission webhooks and
// relayctl apply exactly the same rules: generating CAs and leaves, signing
// CSRs under a policy, decoding PEM with bounds, verifying chains with the
// key usages of a role, checking SANs and DNS-1123 names, and computing when
// to renew.
package pki
