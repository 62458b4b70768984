package probeserver

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

func TestWithProfilingServesProfilesAndKeepsTheProbes(t *testing.T) {
	srv := httptest.NewServer(WithProfiling(Handler(prometheus.NewRegistry(), func() error { return nil })))
	defer srv.Close()
	for _, tc := range []struct{ path, body string }{
		{"/debug/pprof/", "heap"},
		{"/debug/pprof/heap?gc=1&debug=1", "heap profile"},
		{"/healthz", "ok"},
	} {
		resp, err := http.Get(srv.URL + tc.path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(b), tc.body) {
			t.Errorf("GET %s = %d, want 200 containing %q", tc.path, resp.StatusCode, tc.body)
		}
	}
	plain := httptest.NewServer(Handler(prometheus.NewRegistry(), func() error { return nil }))
	defer plain.Close()
	resp, err := http.Get(plain.URL + "/debug/pprof/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("without profiling, GET /debug/pprof/ = %d, want 404", resp.StatusCode)
	}
}
