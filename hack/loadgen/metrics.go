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
	return scrape(e.metrics).sum(name, "")
}

// exposition is the text a metrics endpoint served; nil when it could not
// be read.
type exposition []string

// scrape reads the metrics served at addr (host:port).
func scrape(addr string) exposition {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		return nil
	}
	return strings.Split(string(body), "\n")
}

// sum adds the values of every series of the named metric whose labels
// contain match (every series when match is empty); -1 when the metrics
// could not be read.
func (x exposition) sum(name, match string) float64 {
	if x == nil {
		return -1
	}
	sum := 0.0
	for _, line := range x {
		if strings.HasPrefix(line, name+"{") || strings.HasPrefix(line, name+" ") {
			if i := strings.LastIndexByte(line, '}'); match != "" && (i < 0 || !strings.Contains(line[:i], match)) {
				continue
			}
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
	return e.cpuProfileAt(ctx, e.metrics, name, d)
}

// cpuProfileAt is cpuProfile of the server whose metrics are at metrics.
func (e *environment) cpuProfileAt(ctx context.Context, metrics, name string, d time.Duration) <-chan error {
	done := make(chan error, 1)
	go func() {
		url := fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", metrics, int(d.Seconds()))
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
