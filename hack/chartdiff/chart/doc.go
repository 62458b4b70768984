// Package chart renders meshrelay's Helm chart (charts/meshrelay) and its
// kustomize overlays (manifests/overlays) and compares the two in
// substance, so that the chart and the overlays stay one source of truth.
// hack/chartdiff runs the comparison for make verify; the e2e tests use the
// renderings to install the chart.
package chart
