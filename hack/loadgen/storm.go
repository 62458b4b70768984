package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"slices"
	"time"

	"github.com/meshrelay/meshrelay/pkg/pki"
)

// How often the storm phases read a server's metrics: each read costs a
// server with 10,000 clusters about 20 ms of CPU (series per cluster), so
// the stream counts are read every pollEvery, and the signing metrics of
// the renewal storm, whose peaks matter, every samplingEvery.
const (
	pollEvery     = 500 * time.Millisecond
	samplingEvery = 250 * time.Millisecond
)

// issueCerts signs n client certificates for agent-0 … agent-(n-1) with the
// server's signing CA, valid for ttl.
func (e *environment) issueCerts(n int, ttl time.Duration) ([]tls.Certificate, error) {
	certs := make([]tls.Certificate, n)
	for i := range certs {
		c, err := e.signing.IssueClient(pki.Options{DNSNames: []string{agentName(i)}, TTL: ttl})
		if err != nil {
			return nil, err
		}
		keyPEM, _ := c.KeyPEM()
		if certs[i], err = tls.X509KeyPair(c.CertPEM(), keyPEM); err != nil {
			return nil, err
		}
	}
	return certs, nil
}

// streamCounts are the push and pull streams the servers count.
type streamCounts struct{ push, pull float64 }

// countStreams adds relay_push_clients_connected and
// relay_pull_clients_connected over the servers whose metrics are at
// addrs; a server that does not answer counts nothing.
func countStreams(addrs ...string) streamCounts {
	var c streamCounts
	for _, a := range addrs {
		x := scrape(a)
		c.push += max(x.sum("relay_push_clients_connected", ""), 0)
		c.pull += max(x.sum("relay_pull_clients_connected", ""), 0)
	}
	return c
}

// all reports whether both counts are n.
func (c streamCounts) all(n int) bool { return int(c.push) == n && int(c.pull) == n }

// awaitStreams polls the servers at addrs until they count n push and n
// pull streams, and returns when they first did; it gives up at deadline
// or when ctx ends, returning the last counts.
func awaitStreams(ctx context.Context, n int, deadline time.Time, addrs ...string) (time.Time, streamCounts, error) {
	for {
		c := countStreams(addrs...)
		if c.all(n) {
			return time.Now(), c, nil
		}
		if time.Now().After(deadline) {
			return time.Time{}, c, fmt.Errorf("the servers count %.0f push and %.0f pull streams, want %d each", c.push, c.pull, n)
		}
		select {
		case <-ctx.Done():
			return time.Time{}, c, ctx.Err()
		case <-time.After(pollEvery):
		}
	}
}

// percentiles returns the p-th percentiles (0 to 100) of ds.
func percentiles(ds []time.Duration, ps ...float64) []time.Duration {
	out := make([]time.Duration, len(ps))
	if len(ds) == 0 {
		return out
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	for i, p := range ps {
		k := int(p / 100 * float64(len(s)-1))
		out[i] = s[k]
	}
	return out
}

// verdict says whether a goal is met.
func verdict(met bool) string {
	if met {
		return "met"
	}
	return "NOT MET"
}

func secs(d time.Duration) string { return fmt.Sprintf("%.1fs", d.Seconds()) }
