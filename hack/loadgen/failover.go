package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/meshrelay/meshrelay/internal/procstat"
	"github.com/meshrelay/meshrelay/internal/testenv"
)

// failoverGoal is how soon after a replica is lost its agents must have
// their streams open on the others.
const failoverGoal = 15 * time.Second

// failoverReplica is a relay-server beside the main one in the failover
// phase.
type failoverReplica struct {
	name, addr, metrics string
	proc                *testenv.Process
}

// measureFailover runs two more relay-server replicas beside the main one,
// behind a balancer as a Service puts them (leader election by Lease, as
// deployed), connects n agents through it (one Connect stream each), kills
// one replica with SIGKILL (a node lost) and measures until the other two
// count every agent's streams.
func measureFailover(ctx context.Context, e *environment, o options) error {
	n := o.agents
	if err := e.register(ctx, n, o.concurrency); err != nil {
		return err
	}
	replicas := []*failoverReplica{{name: mainReplica, addr: e.addr, metrics: e.metrics, proc: e.server}}
	defer func() {
		for _, r := range replicas[1:] {
			if exited, _ := r.proc.Exited(); exited {
				continue // the replica lost
			}
			if err := r.proc.Stop(); err != nil {
				fmt.Println(err)
			}
		}
	}()
	for _, name := range []string{"relay-server-1", "relay-server-2"} {
		r := &failoverReplica{name: name}
		var err error
		if r.addr, err = testenv.FreeAddr(); err == nil {
			r.metrics, err = testenv.FreeAddr()
		}
		if err != nil {
			return err
		}
		if r.proc, err = e.startServer(ctx, name, r.addr, r.metrics, e.serverArgs...); err != nil {
			return err
		}
		replicas = append(replicas, r)
	}
	// As many balancers as their limit of open files asks for, each over
	// the three replicas; the agents are spread over them.
	perBalancer := max(int(fileLimit())-fdsBeside, 1024) / fdsPerBalancedConn
	var lbs []string
	var balancers []*balancerProcess
	for range (n + perBalancer - 1) / perBalancer {
		lb, err := startBalancer([]string{replicas[0].addr, replicas[1].addr, replicas[2].addr})
		if err != nil {
			return err
		}
		defer lb.stop()
		lbs, balancers = append(lbs, lb.addr), append(balancers, lb)
	}
	metricsOf := func(rs []*failoverReplica) []string {
		var m []string
		for _, r := range rs {
			m = append(m, r.metrics)
		}
		return m
	}

	certs, err := e.issueCerts(n, time.Hour)
	if err != nil {
		return err
	}
	f := newFleet(ctx, lbs, e.roots, certs)
	defer f.stop()
	if err := f.start(ctx, o.concurrency); err != nil {
		return err
	}
	if _, _, err := awaitStreams(ctx, n, time.Now().Add(5*time.Minute), metricsOf(replicas)...); err != nil {
		f.printErrors()
		return err
	}
	settle(ctx)
	setupFailures := f.failures()
	spread := make([]string, len(replicas))
	for i, r := range replicas {
		spread[i] = fmt.Sprintf("%s %.0f", r.name, countStreams(r.metrics).pull)
	}
	// The replica lost is not the one that made the CA, which the other
	// phases measure.
	lost, rest := replicas[1], []*failoverReplica{replicas[0], replicas[2]}
	held := countStreams(lost.metrics)
	leader := scrape(lost.metrics).sum("leader_election_master_status", `name="relay-server"`) == 1

	f.forgetErrors()
	failedBefore := f.failures()
	names, pids := e.controlPlane()
	names, pids = append(names, "loadgen (the agents)"), append(pids, os.Getpid())
	for _, r := range rest {
		if pid, err := procstat.PidOf("relay-server", r.addr); err == nil {
			names, pids = append(names, r.name), append(pids, pid)
		}
	}
	for i, lb := range balancers {
		names, pids = append(names, fmt.Sprintf("balancer %d", i+1)), append(pids, lb.cmd.Process.Pid)
	}
	var profs []<-chan error
	window := startCPUWindow(names, pids)
	kill := time.Now()
	if err := lost.proc.Kill(); err != nil {
		return err
	}
	if o.cpuProfile > 0 {
		for _, r := range rest {
			profs = append(profs, e.cpuProfileAt(ctx, r.metrics, "failover-"+r.name+"-cpu.pprof", o.cpuProfile))
		}
	}
	back, counts, waitErr := awaitStreams(ctx, n, kill.Add(5*time.Minute), metricsOf(rest)...)
	cpu := window.String()
	for _, p := range profs {
		if err := <-p; err != nil {
			return err
		}
	}
	moved := 0
	var took []time.Duration
	for _, a := range f.agents {
		if d := a.dropped.Load(); d >= kill.UnixNano() {
			moved++
			if b := a.back.Load(); b >= d {
				took = append(took, time.Duration(b-d))
			}
		}
	}
	p := percentiles(took, 50, 99, 100)

	role := "not the leader"
	if leader {
		role = "the leader"
	}
	fmt.Printf("\nfailover: %d agents, each with one Connect stream (a server counts it as one push and one pull stream), behind %d balancer processes, each over the 3 relay-server replicas (pull streams, one per agent: %s; %d connections failed and were dialed again while they connected)\n",
		n, len(lbs), strings.Join(spread, ", "), setupFailures)
	fmt.Printf("  %s (%s, counting %.0f push and %.0f pull streams) killed with SIGKILL\n", lost.name, role, held.push, held.pull)
	if waitErr != nil {
		fmt.Printf("  its agents back on the other two: not within %s: %v (goal <= %s): %s\n", time.Since(kill).Round(time.Second), waitErr, failoverGoal, verdict(false))
	} else {
		fmt.Printf("  its agents back on the other two (%.0f push and %.0f pull streams) %s after the kill (goal <= %s): %s\n",
			counts.push, counts.pull, secs(back.Sub(kill)), failoverGoal, verdict(back.Sub(kill) <= failoverGoal))
	}
	fmt.Printf("  agents moved: %d; per agent, from its streams dropping to open again: p50 %s, p99 %s, max %s\n", moved, secs(p[0]), secs(p[1]), secs(p[2]))
	fmt.Printf("  their connections that failed to open: %d\n", f.failures()-failedBefore)
	f.printErrors()
	fmt.Printf("  CPU from the kill until all back: %s\n", cpu)
	for _, r := range rest {
		c := countStreams(r.metrics)
		fmt.Printf("  %s now counts %.0f push and %.0f pull streams\n", r.name, c.push, c.pull)
	}
	return nil
}
