package version

import (
	"runtime"

	"github.com/prometheus/client_golang/prometheus"
)

// NewBuildInfo returns the <namespace>_build_info gauge: always 1, with the
// labels version, revision (the commit) and goversion of this build, so that
// a dashboard or an alert can tell which build every pod runs, and join it
// to the binary's other metrics.
func NewBuildInfo(namespace string) prometheus.Collector {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: namespace,
		Name:      "build_info",
		Help:      "A metric with a constant 1 value, labelled by the version, revision (commit) and Go version the binary was built from.",
		ConstLabels: prometheus.Labels{
			"version":   Version,
			"revision":  Revision(),
			"goversion": runtime.Version(),
		},
	})
	g.Set(1)
	return g
}
