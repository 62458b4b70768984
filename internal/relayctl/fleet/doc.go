// Package fleet holds relayctl's operations across the management cluster
// and its workload clusters: Register (the manual steps of reference 001 as
// one call) and Check (is every cluster registered and connected, and is
// every relay secret present and consistent across clusters).
package fleet
