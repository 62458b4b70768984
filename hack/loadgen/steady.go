package main

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc"

	"github.com/meshrelay/meshrelay/internal/procstat"
)

// The steady phase waits until relay-server has written the status of the
// agents it connected: until its API client has applied no status for
// steadyQuietWrites, at most steadyDrainLimit.
const (
	steadyQuietWrites = 10 * time.Second
	steadyDrainLimit  = 10 * time.Minute
	steadyWindow      = 30 * time.Second
)

type steadyResult struct {
	agents  int
	drained time.Duration // until the status of the connected agents was written
	writes  float64       // PATCHes (status applies) of relay-server's API client in the window
	cpu     time.Duration // relay-server's CPU over the window
	idle    time.Duration // relay-server's CPU per second before the agents connected
}

// measureSteady connects n agents, each with one Connect stream (their
// clusters must be registered), waits until relay-server has written
// their status, and reads its CPU over steadyWindow while they hold their
// streams: what a connected fleet costs when nothing changes (keepalives,
// the leader's sweeps and rotation checks, the metrics of every cluster).
func measureSteady(ctx context.Context, e *environment, n, concurrency int) (*steadyResult, error) {
	pid, err := procstat.PidOf("relay-server", e.addr)
	if err != nil {
		return nil, err
	}
	res := &steadyResult{agents: n}
	if err := quiesce(ctx, pid, 0); err != nil {
		return nil, err
	}
	idle0, err := procstat.ProcessCPU(pid)
	if err != nil {
		return nil, err
	}
	time.Sleep(idleWindow)
	idle1, err := procstat.ProcessCPU(pid)
	if err != nil {
		return nil, err
	}
	res.idle = (idle1 - idle0) * time.Second / idleWindow

	certs, err := e.issueCerts(n, time.Hour)
	if err != nil {
		return nil, err
	}
	conns := make([]*grpc.ClientConn, n)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	start := time.Now()
	if err := forEach(ctx, n, concurrency, func(i int) (err error) {
		if conns[i], err = connectAgent(ctx, e, &certs[i], connectShape); err != nil {
			return fmt.Errorf("agent %d: %w", i, err)
		}
		return nil
	}); err != nil {
		return nil, err
	}
	// The status of n clusters is written at the status client's rate, by
	// server-side apply (a PATCH): wait until relay-server makes no more.
	// Its Leases are renewed with PUTs all the time, which do not count.
	writes := func() float64 {
		return scrape(e.metrics).sum("rest_client_requests_total", `method="PATCH"`)
	}
	last, quietSince := writes(), time.Now()
	for time.Since(quietSince) < steadyQuietWrites {
		if time.Since(start) > steadyDrainLimit {
			return nil, fmt.Errorf("relay-server still writes status %s after %d agents connected", steadyDrainLimit, n)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Second):
		}
		if w := writes(); w != last {
			last, quietSince = w, time.Now()
		}
	}
	res.drained = time.Since(start) - steadyQuietWrites
	cpu0, err := procstat.ProcessCPU(pid)
	if err != nil {
		return nil, err
	}
	time.Sleep(steadyWindow)
	cpu1, err := procstat.ProcessCPU(pid)
	if err != nil {
		return nil, err
	}
	res.cpu = cpu1 - cpu0
	res.writes = writes() - last
	if push := e.sumMetric("relay_push_clients_connected"); int(push) != n {
		return nil, fmt.Errorf("relay-server counts %v push streams at the end of the window, want %d", push, n)
	}
	return res, nil
}

func (r *steadyResult) print() {
	perSecond := r.cpu * time.Second / steadyWindow
	fmt.Printf("\nsteady: %d agents holding their streams (one Connect stream each), their status written (%s after they connected)\n", r.agents, r.drained.Round(time.Second))
	fmt.Printf("  relay-server CPU: %.1f ms per second over %s (%.1f ms per second idle before they connected): %.2f ms per second per 1,000 agents, %.2f%% of a core\n",
		ms(perSecond), steadyWindow, ms(r.idle), ms(perSecond-r.idle)*1000/float64(r.agents), float64(perSecond)/float64(time.Second)*100)
	fmt.Printf("  status applies in the window: %.0f\n", r.writes)
}
