// Command chartdiff fails when the Helm chart (charts/meshrelay) and the
// kustomize overlays (manifests/overlays/management and .../workload, each
// also with components/monitoring, and each with webhook/cert-manager in
// place of webhook/base) differ in substance, printing each difference, or
// when the chart's copies of the CRDs and the monitoring component drifted
// from manifests/. make verify runs it.
//
//	HELM=bin/tools/helm go run ./hack/chartdiff
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"

	"github.com/meshrelay/meshrelay/hack/chartdiff/chart"
	"github.com/meshrelay/meshrelay/internal/testenv"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "chartdiff:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	helm, err := chart.Helm()
	if err != nil {
		return err
	}
	kubectl, err := chart.Kubectl()
	if err != nil {
		return err
	}
	root, err := testenv.RepoRoot()
	if err != nil {
		return err
	}
	diffs, err := chart.Compare(ctx, helm, kubectl, root)
	if err != nil {
		return err
	}
	if len(diffs) > 0 {
		for _, d := range diffs {
			fmt.Println(d)
		}
		return fmt.Errorf("%d differences between charts/meshrelay and manifests/: change both so that they make the same objects "+
			"(a chart value's default must give what the overlay has)", len(diffs))
	}
	fmt.Println("chartdiff: charts/meshrelay renders what manifests/overlays/management and manifests/overlays/workload do, " +
		"with components/monitoring and with webhook/cert-manager too; its CRDs and monitoring files are current")
	return nil
}
