// Package testenv starts real local Kubernetes clusters for tests: each
// cluster is its own etcd and kube-apiserver (controller-runtime envtest),
// optionally with kube-controller-manager so that Deployments make Pods. It
// writes one kubeconfig per cluster and a merged one with a context per
// cluster, installs meshrelay's CRDs, runs kubectl against them, and stops
// everything when the test ends. With Options.CertManager each cluster also
// runs cert-manager's real controller, with that release's CRDs.
//
// The binaries come from KUBEBUILDER_ASSETS, or from the folder that
// `make envtest-assets` fills; cert-manager from CERT_MANAGER_ASSETS, or
// the folder that `make cert-manager` fills. When one is missing the test
// fails and says how to get it; it is never skipped for that. Only
// `go test -short` (make test-unit) skips tests that need local clusters,
// and says so.
package testenv
