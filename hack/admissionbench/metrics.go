package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/meshrelay/meshrelay/internal/testenv"
	"github.com/meshrelay/meshrelay/webhook"
)

// The sums and counts that split the added latency: the API server's time
// in its call of a webhook (from building the AdmissionReview to reading
// the answer), and relay-webhook's time in its handler (from the request's
// body read to the answer written).
const (
	apiServerCall = "apiserver_admission_webhook_admission_duration_seconds"
	handlerTime   = "controller_runtime_webhook_latency_seconds"
	// relayWebhook is the overlay's webhook of relay secret creates and
	// updates.
	relayWebhook = "secrets.meshrelay.dev"
)

// callTimes are the sums and counts at one moment of the API server's
// calls of relay-webhook and of the floor, and of relay-webhook's handler.
type callTimes struct {
	callSum, callCount       float64
	floorSum, floorCount     float64
	handlerSum, handlerCount float64
	// gcs are relay-webhook's garbage collections.
	gcs float64
}

// scrapeCallTimes reads them from the API server's and relay-webhook's
// metrics.
func (e *environment) scrapeCallTimes(ctx context.Context) (callTimes, error) {
	var t callTimes
	body, err := e.clients.RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return t, fmt.Errorf("failed to read the API server's metrics: %w", err)
	}
	for line := range strings.Lines(string(body)) {
		var sum, count *float64
		switch {
		case strings.Contains(line, fmt.Sprintf("name=%q", relayWebhook)):
			sum, count = &t.callSum, &t.callCount
		case strings.Contains(line, fmt.Sprintf("name=%q", floorWebhook)):
			sum, count = &t.floorSum, &t.floorCount
		default:
			continue
		}
		switch {
		case strings.HasPrefix(line, apiServerCall+"_sum{"):
			*sum += testenv.MetricValue(line)
		case strings.HasPrefix(line, apiServerCall+"_count{"):
			*count += testenv.MetricValue(line)
		}
	}
	m := testenv.ScrapeMetrics("http://" + e.metricsAddr + "/metrics")
	label := fmt.Sprintf(`{webhook=%q}`, webhook.SecretsPath)
	t.handlerSum, t.handlerCount = m[handlerTime+"_sum"+label], m[handlerTime+"_count"+label]
	t.gcs = m["go_gc_duration_seconds_count"]
	return t, nil
}

// means returns the mean API server call of relay-webhook and of the
// floor, and relay-webhook's handler time, between t and later.
func (t callTimes) means(later callTimes) (call, floor, handler time.Duration) {
	mean := func(sum, count float64) time.Duration {
		if count <= 0 {
			return 0
		}
		return time.Duration(sum / count * float64(time.Second))
	}
	return mean(later.callSum-t.callSum, later.callCount-t.callCount),
		mean(later.floorSum-t.floorSum, later.floorCount-t.floorCount),
		mean(later.handlerSum-t.handlerSum, later.handlerCount-t.handlerCount)
}
