// Package fleet holds relayctl's operations across the management cluster
// and its workload clusters: Register (the manual registration steps of a
// workload cluster, copying the root CA and a bootstrap token, as one call),
// Revoke (refusing a cluster's client certificates) and Check (is every
// cluster registered and connected, and is every relay secret present and
// consistent across clusters).
package fleet
