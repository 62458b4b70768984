package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

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

// cpuProfile fetches the server's CPU profile over the next d into
// --profile-dir/name, for go tool pprof; the returned channel gets its error
// when it ends.
func (e *environment) cpuProfile(ctx context.Context, name string, d time.Duration) <-chan error {
	done := make(chan error, 1)
	go func() {
		url := fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", e.metrics, int(d.Seconds()))
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			done <- err
			return
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			done <- err
			return
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			done <- fmt.Errorf("server's CPU profile: %s (is --enable-profiling set?)", resp.Status)
			return
		}
		if err := os.MkdirAll(e.profileDir, 0o755); err != nil {
			done <- err
			return
		}
		path := filepath.Join(e.profileDir, name)
		b, err := io.ReadAll(resp.Body)
		if err == nil {
			err = os.WriteFile(path, b, 0o644)
		}
		if err == nil {
			fmt.Printf("  server CPU profile: %s\n", path)
		}
		done <- err
	}()
	return done
}
