package webhook_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/meshrelay/meshrelay/internal/testenv"
)

func TestWebhookMetricsServeBuildInfoBesideControllerRuntimesAndNoProfiles(t *testing.T) {
	e := startWebhook(t, false)
	url := "http://" + e.metrics

	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics answered %d, want 200 (a metric in both registries makes it 500)", resp.StatusCode)
	}
	got := testenv.ScrapeMetrics(url + "/metrics")
	for _, prefix := range []string{"relay_webhook_build_info{", "controller_runtime_webhook_requests_total{", "rest_client_requests_total{", "go_goroutines"} {
		found := false
		for name := range got {
			found = found || strings.HasPrefix(name, prefix)
		}
		if !found {
			t.Errorf("/metrics has no %s sample", prefix)
		}
	}

	resp, err = http.Get(url + "/debug/pprof/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("/debug/pprof/ answered %d, want 404: profiles are served only with --enable-profiling", resp.StatusCode)
	}
}
