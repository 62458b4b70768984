package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/meshrelay/meshrelay/internal/procstat"
	"github.com/meshrelay/meshrelay/relay/agent"
)

// reconnectGoal is how soon after relay-server is stopped every agent must
// have its streams open again.
const reconnectGoal = 30 * time.Second

// measureReconnect connects n agents, stops relay-server with SIGTERM as a
// rollout does, starts it again with the same arguments and measures how
// the agents (one Connect stream each) come back: until the new server
// counts n push and n pull streams (a Connect stream is one of each), each
// agent's time from its streams dropping to open again, the new server's
// CPU, and that no certificate was issued.
func measureReconnect(ctx context.Context, e *environment, o options) error {
	n := o.agents
	if err := e.register(ctx, n, o.concurrency); err != nil {
		return err
	}
	certs, err := e.issueCerts(n, time.Hour)
	if err != nil {
		return err
	}
	f, err := e.connectFleet(ctx, certs, o.concurrency)
	if err != nil {
		return err
	}
	defer f.stop()
	settle(ctx)
	issuedBefore := scrape(e.metrics).sum("relay_certificates_issued_total", "")
	failedBefore := f.failures()
	f.forgetErrors()

	names, pids := e.controlPlane()
	window := startCPUWindow(append(names, "loadgen (the agents)"), append(pids, os.Getpid()))
	stop := time.Now()
	if err := e.server.Stop(); err != nil {
		return fmt.Errorf("failed to stop relay-server: %w", err)
	}
	exited := time.Since(stop)
	if e.server, err = e.launchServer(mainReplica, e.addr, e.metrics, e.serverArgs...); err != nil {
		return err
	}
	started := time.Now()
	pid, err := procstat.PidOf("relay-server", e.addr)
	if err != nil {
		return err
	}
	var ready time.Time
	var readyCPU time.Duration
	var prof <-chan error
	deadline := stop.Add(5 * time.Minute)
	for ready.IsZero() {
		if exited, err := e.server.Exited(); exited {
			return fmt.Errorf("relay-server exited after its restart (%v):\n%s", err, e.server.Tail(20))
		}
		if resp, err := http.Get("http://" + e.metrics + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				ready = time.Now()
				readyCPU, _ = procstat.ProcessCPU(pid)
				if o.cpuProfile > 0 {
					prof = e.cpuProfile(ctx, "reconnect-cpu.pprof", o.cpuProfile)
				}
				break
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("relay-server not ready %s after its restart:\n%s", time.Since(started).Round(time.Second), e.server.Tail(20))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	allBack, counts, waitErr := awaitStreams(ctx, n, deadline, e.metrics)
	others := window.String()
	cpu, err := procstat.ProcessCPU(pid)
	if err != nil {
		return err
	}
	issuedAfter := scrape(e.metrics).sum("relay_certificates_issued_total", "")
	if prof != nil {
		if err := <-prof; err != nil {
			return err
		}
	}

	// Each agent's time from its streams dropping to open again.
	var took []time.Duration
	notBack, longest := 0, time.Duration(0)
	failed := f.failures() - failedBefore
	var lastBack int64
	for _, a := range f.agents {
		dropped, back := a.dropped.Load(), a.back.Load()
		if dropped < stop.UnixNano() || back < dropped {
			notBack++
			continue
		}
		lastBack = max(lastBack, back)
		took = append(took, time.Duration(back-dropped))
		longest = max(longest, time.Duration(a.longestWait.Load()))
	}
	p := percentiles(took, 50, 99, 100)

	fmt.Printf("\nreconnect: %d agents, each with one Connect stream (a server counts it as one push and one pull stream); relay-server stopped with SIGTERM (exited after %s) and started again with the same arguments\n",
		n, exited.Round(time.Millisecond))
	fmt.Printf("  ready %s after the stop\n", secs(ready.Sub(stop)))
	if waitErr != nil {
		fmt.Printf("  all back: not within %s of the stop: %v (goal <= %s): %s\n", deadline.Sub(stop).Round(time.Second), waitErr, reconnectGoal, verdict(false))
	} else {
		fmt.Printf("  all back (the server counts %.0f push and %.0f pull streams, read every %s) %s after the stop (goal <= %s): %s; the last agent opened its streams %s after the stop\n",
			counts.push, counts.pull, pollEvery, secs(allBack.Sub(stop)), reconnectGoal, verdict(allBack.Sub(stop) <= reconnectGoal), secs(time.Unix(0, lastBack).Sub(stop)))
	}
	fmt.Printf("  per agent, from its streams dropping to open again: p50 %s, p99 %s, max %s\n", secs(p[0]), secs(p[1]), secs(p[2]))
	fmt.Printf("  agents' connections that failed to open: %d (%.1f per agent); longest backoff drawn: %s (agent redial %s to %s)\n",
		failed, float64(failed)/float64(max(len(took), 1)), secs(longest), secs(agent.RedialInitial), secs(agent.RedialLimit))
	f.printErrors()
	fmt.Printf("  certificates issued: %.0f by the stopped server before the stop, %.0f by the new one; the agents called Renew %d times and Bootstrap never (goal: none issued): %s\n",
		issuedBefore, issuedAfter, f.renewCalls.Load(), verdict(issuedAfter == 0 && f.renewCalls.Load() == 0))
	fmt.Printf("  agents that gave up: none (the agent's redial never stops); refused by the server: %d; not back at the end: %d (goal: none): %s\n",
		f.refused.Load(), notBack, verdict(notBack == 0 && f.refused.Load() == 0))
	fmt.Printf("  relay-server CPU from its start until all back: %.2f s (%.2f s until ready, %.2f s after)\n",
		cpu.Seconds(), readyCPU.Seconds(), (cpu - readyCPU).Seconds())
	fmt.Printf("  CPU from the stop until all back: %s\n", others)
	return nil
}
