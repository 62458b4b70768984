package chart

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
)

// Copies lists the files the chart carries as copies of manifests/ (helm
// reads only files inside the chart): the CRDs, and the monitoring
// component's objects. Each pair is chart file, original.
var Copies = [][2]string{
	{"charts/meshrelay/crds/meshrelay.dev_kubernetesclusters.yaml", "manifests/crds/meshrelay.dev_kubernetesclusters.yaml"},
	{"charts/meshrelay/crds/meshrelay.dev_roottrustpolicies.yaml", "manifests/crds/meshrelay.dev_roottrustpolicies.yaml"},
	{"charts/meshrelay/crds/meshrelay.dev_relaytrusts.yaml", "manifests/crds/meshrelay.dev_relaytrusts.yaml"},
	{"charts/meshrelay/files/services.yaml", "manifests/components/monitoring/services.yaml"},
	{"charts/meshrelay/files/servicemonitors.yaml", "manifests/components/monitoring/servicemonitors.yaml"},
	{"charts/meshrelay/files/prometheusrule.yaml", "manifests/components/monitoring/prometheusrule.yaml"},
}

// CheckCopies returns one line per chart copy that differs from its
// original, saying how to bring it back, and per CRD in manifests/crds the
// chart lacks.
func CheckCopies(root string) ([]string, error) {
	var out []string
	for _, c := range Copies {
		got, err := os.ReadFile(filepath.Join(root, c[0]))
		if err != nil && !os.IsNotExist(err) {
			return nil, fmt.Errorf("failed to read chart copy: %w", err)
		}
		want, err := os.ReadFile(filepath.Join(root, c[1]))
		if err != nil {
			return nil, fmt.Errorf("failed to read original: %w", err)
		}
		if !bytes.Equal(got, want) {
			out = append(out, fmt.Sprintf("%s differs from %s: run make generate (or cp %s %s)", c[0], c[1], c[1], c[0]))
		}
	}
	crds, err := filepath.Glob(filepath.Join(root, "manifests", "crds", "*_*.yaml"))
	if err != nil {
		return nil, err
	}
	known := map[string]bool{}
	for _, c := range Copies {
		known[c[1]] = true
	}
	for _, crd := range crds {
		rel, _ := filepath.Rel(root, crd)
		if !known[rel] {
			out = append(out, fmt.Sprintf("%s is a CRD the chart lacks: copy it to charts/meshrelay/crds/ and add it to chart.Copies in hack/chartdiff/chart", rel))
		}
	}
	return out, nil
}
