package testenv

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Eventually calls check every quarter second until it returns nil, and
// fails the test with check's last error when timeout passes first.
func Eventually(t testing.TB, what string, timeout time.Duration, check func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still failing after %s: %v", what, timeout, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// ScrapeMetric fetches a Prometheus text endpoint and returns the first
// line that starts with prefix (a metric name with its labels), or "".
func ScrapeMetric(url, prefix string) string {
	for line := range strings.Lines(scrape(url)) {
		if strings.HasPrefix(line, prefix) {
			return strings.TrimRight(line, "\n")
		}
	}
	return ""
}

// ScrapeMetrics fetches a Prometheus text endpoint and returns every sample
// by its name and labels as printed, for a caller that reads many at once;
// empty when the endpoint cannot be read.
func ScrapeMetrics(url string) map[string]float64 {
	out := map[string]float64{}
	for line := range strings.Lines(scrape(url)) {
		if strings.HasPrefix(line, "#") {
			continue
		}
		if v := MetricValue(line); v != -1 {
			name, _, _ := strings.Cut(line, " ")
			out[name] = v
		}
	}
	return out
}

// scrape returns the page at url, or "" when it cannot be read.
func scrape(url string) string {
	resp, err := http.Get(url)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return string(body)
}

// MetricValue returns the value of a scraped metric line, or -1 when the
// line is not one.
func MetricValue(line string) float64 {
	fields := strings.Fields(line)
	if len(fields) != 2 {
		return -1
	}
	v, err := strconv.ParseFloat(fields[1], 64)
	if err != nil {
		return -1
	}
	return v
}
