// Package trustbundle handles the relay trust bundle outside its secret:
// the relay roots published in a cluster as a ClusterTrustBundle
// (certificates.k8s.io/v1), which pods mount with a clusterTrustBundle
// projection, and the folder such a projected volume becomes, whose files
// together are a process's trust anchors.
//
// relay-server publishes the bundle on the management cluster and each
// relay-agent in its own cluster, both with Publish; the agent reads its
// mounted folder with Read. Where the ClusterTrustBundle API is not served,
// Publish reports so and does nothing, so that callers fall back to the
// root secret alone.
package trustbundle
