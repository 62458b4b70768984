package probe

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestHandlerAnswersProbesAndScrapes(t *testing.T) {
	reg := prometheus.NewRegistry()
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "probe_test_value", Help: "test"})
	reg.MustRegister(g)
	g.Set(7)
	var notReady error = errors.New("caches are syncing")
	srv := httptest.NewServer(Handler(reg, func() error { return notReady }))
	defer srv.Close()
	get := func(path string) (int, string) {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, tc := range []struct {
		name, path string
		code       int
		body       string
	}{
		{"healthz is always ok", "/healthz", 200, "ok"},
		{"readyz says why it is not ready", "/readyz", 503, "not ready: caches are syncing"},
		{"metrics serves the registry", "/metrics", 200, "probe_test_value 7"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := get(tc.path)
			if code != tc.code || !strings.Contains(body, tc.body) {
				t.Errorf("GET %s = %d %q, want %d containing %q", tc.path, code, body, tc.code, tc.body)
			}
		})
	}
	notReady = nil
	if code, body := get("/readyz"); code != 200 || strings.TrimSpace(body) != "ok" {
		t.Errorf("ready: GET /readyz = %d %q", code, body)
	}
}
