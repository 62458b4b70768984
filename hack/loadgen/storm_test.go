package main

import (
	"testing"
	"time"
)

func TestSpreadFindsTheFullestBucketAndTheMean(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	for _, tc := range []struct {
		name string
		ts   []time.Time
		peak int
		mean float64
	}{
		{"no times", nil, 0, 0},
		{"retries in lockstep fill one bucket", []time.Time{at(0), at(10), at(20), at(30)}, 4, 4},
		{"retries spread out fill one bucket each", []time.Time{at(0), at(100), at(200), at(300)}, 1, 1},
		{"a crowd and a straggler", []time.Time{at(0), at(50), at(60), at(990)}, 3, 0.4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			peak, mean := spread(tc.ts, 100*time.Millisecond)
			if peak != tc.peak || mean != tc.mean {
				t.Errorf("spread = %d, %v; want %d, %v", peak, mean, tc.peak, tc.mean)
			}
		})
	}
}

func TestPercentiles(t *testing.T) {
	var ds []time.Duration
	for i := 100; i >= 1; i-- {
		ds = append(ds, time.Duration(i)*time.Second)
	}
	got := percentiles(ds, 50, 99, 100)
	want := []time.Duration{50 * time.Second, 99 * time.Second, 100 * time.Second}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("percentiles = %v, want %v", got, want)
			break
		}
	}
	if p := percentiles(nil, 50); p[0] != 0 {
		t.Errorf("percentile of nothing = %v, want 0", p[0])
	}
}

func TestExpositionSumsTheSeriesOfOneMetric(t *testing.T) {
	x := exposition{
		`# HELP relay_push_clients_connected Push streams.`,
		`relay_push_clients_connected{cluster="a"} 1`,
		`relay_push_clients_connected{cluster="b"} 2`,
		`relay_push_clients_connected_total 7`,
		`grpc_server_started_total{grpc_method="Renew",grpc_type="unary"} 5`,
		`grpc_server_started_total{grpc_method="Bootstrap",grpc_type="unary"} 9`,
		`go_goroutines 40`,
	}
	for _, tc := range []struct {
		name, metric, match string
		want                float64
	}{
		{"every series of the metric, not of a longer name", "relay_push_clients_connected", "", 3},
		{"the series whose labels match", "grpc_server_started_total", `grpc_method="Renew"`, 5},
		{"a metric without labels", "go_goroutines", "", 40},
		{"a metric not served", "relay_pull_clients_connected", "", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := x.sum(tc.metric, tc.match); got != tc.want {
				t.Errorf("sum = %v, want %v", got, tc.want)
			}
		})
	}
	if got := exposition(nil).sum("go_goroutines", ""); got != -1 {
		t.Errorf("sum of metrics not read = %v, want -1", got)
	}
}

func TestPeakRateIsTheFastestSecond(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	reads := []countAt{{t0, 0}, {t0.Add(500 * time.Millisecond), 10}, {t0.Add(time.Second), 20}, {t0.Add(1500 * time.Millisecond), 80}, {t0.Add(2 * time.Second), 90}}
	if got := peakRate(reads, time.Second); got != 70 {
		t.Errorf("peak rate = %v, want 70 (from 20 at 1s to 90 at 2s)", got)
	}
	if got := peakRate(reads[:1], time.Second); got != 0 {
		t.Errorf("peak rate of one read = %v, want 0", got)
	}
}
