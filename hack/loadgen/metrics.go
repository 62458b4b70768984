package main

import (
	"io"
	"net/http"
	"strings"

	"github.com/meshrelay/meshrelay/internal/testenv"
)

// sumMetric adds the values of every series of the named metric.
func (e *environment) sumMetric(name string) float64 {
	resp, err := http.Get("http://" + e.metrics + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	sum := 0.0
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, name+"{") {
			if v := testenv.MetricValue(line); v > 0 {
				sum += v
			}
		}
	}
	return sum
}
