// Command loadgen measures relay-server under load, in its own process
// against a relay-server process on a local cluster:
//
//   - bootstrap cost: relay-server's process CPU per bootstrap (a new TLS
//     connection with the identity token and a CSR) beside the floor's, a
//     bare TLS server doing only the cryptographic work of a bootstrap
//     (floor.go), driven by the same client in the same run, alternating;
//   - scale: N agents holding their streams over mutual TLS, the server's
//     memory per connected agent and the time until all connect, for each
//     shape of streams (shapes.go): one Connect stream per agent, and a
//     push and a pull stream per agent as an agent that predates Connect
//     holds them, each against a relay-server started for it;
//   - reconnect: N agents connected while relay-server is stopped with
//     SIGTERM and started again, until all are back (reconnect.go);
//   - failover: N agents over three replicas behind a balancer, one killed,
//     until its agents are on the other two (failover.go);
//   - renewal: N agents whose certificates are due within the same minute
//     renewing against the server's signing budget (renewal.go).
//
// The simulated agents open one Connect stream each, as relay-agent does,
// and reconnect and retry with relay-agent's own delays and backoff
// (fleet.go), so that a storm is the one production would see.
//
// make bench runs it after the Go benchmarks.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/meshrelay/meshrelay/pkg/config"
)

type options struct {
	server      string
	agents      int
	steady      int
	bootstraps  int
	concurrency int
	rounds      int
	phases      string
	signingCap  int
	cpuProfile  time.Duration
	timeout     time.Duration
	profileDir  string
	scaleShapes streamShapes
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == balancerCommand {
		if err := balancerMain(os.Args[2:]); err != nil {
			fmt.Fprintf(os.Stderr, "loadgen balancer: %v\n", err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) > 1 && os.Args[1] == floorCommand {
		// The floor serves until it is killed: it returns only on failure.
		fmt.Fprintf(os.Stderr, "loadgen floor: %v\n", floorMain(os.Args[2:]))
		os.Exit(1)
	}
	var o options
	flag.StringVar(&o.server, "server-binary", "bin/relay-server", "relay-server binary to measure")
	flag.IntVar(&o.agents, "agents", 10000, "agents in the scale, reconnect, failover and renewal phases, each holding one Connect stream (the scale phase measures a push and a pull stream per agent too: --scale-shapes) (fewer, such as 500, for a quick run)")
	flag.IntVar(&o.steady, "steady-agents", 1000, "agents holding their streams in the steady phase, which waits until relay-server has written their status (about 0.1 s per agent)")
	flag.IntVar(&o.bootstraps, "bootstraps", 2000, "bootstraps in the throughput phase")
	flag.IntVar(&o.concurrency, "concurrency", 32, "calls in flight at once")
	flag.StringVar(&o.phases, "phases", strings.Join(allPhases, ","), "phases to run, comma-separated, of "+strings.Join(allPhases, ", ")+"; they run in that order")
	flag.IntVar(&o.signingCap, "signing-cap", config.DefaultServer().MaxConcurrentSigning, "relay-server's --max-concurrent-signing in the renewal phase")
	flag.DurationVar(&o.cpuProfile, "cpu-profile", 0, "when set, keep the server's CPU profile over this long from the start of its first bootstrap window, over its idle window, from its readiness after the reconnect phase's restart, and from the renewal phase's first renewal time, in --profile-dir")
	flag.IntVar(&o.rounds, "rounds", 4, "bootstrap rounds, alternating relay-server and the floor")
	flag.DurationVar(&o.timeout, "timeout", 45*time.Minute, "give up after this long")
	flag.StringVar(&o.profileDir, "profile-dir", "bin/loadgen", "where the server's heap profiles before and after each shape of the scale phase are kept")
	o.scaleShapes = slices.Clone(allShapes)
	flag.Var(&o.scaleShapes, "scale-shapes", "`shapes` of the agents' streams the scale phase measures, comma-separated, of "+allShapes.String()+
		" (connect: one Connect stream per agent; push+pull: a push and a pull stream per agent, as an agent that predates Connect), each against a relay-server started for it; with both it prints the ratio of their memory per agent")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	if err := run(ctx, o); err != nil {
		fmt.Fprintf(os.Stderr, "loadgen: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options) error {
	if err := ensureFileLimit(uint64(o.agents + fdsBeside)); err != nil {
		return err
	}
	env, err := startEnvironment(ctx, o.server)
	if err != nil {
		return err
	}
	defer env.stop()
	env.profileDir = o.profileDir
	fmt.Printf("relay-server %s on a local cluster; %d agents, %d bootstraps, concurrency %d\n", env.addr, o.agents, o.bootstraps, o.concurrency)

	phases := map[string]bool{}
	for _, p := range strings.Split(o.phases, ",") {
		p = strings.TrimSpace(p)
		if runPhase[p] == nil {
			return fmt.Errorf("unknown phase %q in --phases: use %s", p, strings.Join(allPhases, ", "))
		}
		phases[p] = true
	}
	for _, p := range allPhases {
		if !phases[p] {
			continue
		}
		if err := runPhase[p](ctx, env, o); err != nil {
			return fmt.Errorf("%s phase: %w", p, err)
		}
	}
	return nil
}

// allPhases are the phases in the order they run; the steady phase comes
// before the scale phase, whose 10,000 agents leave relay-server writing
// status for a long time; the failover phase leaves a replica killed and
// the renewal phase restarts relay-server with another signing budget, so
// they come last.
var allPhases = []string{"bootstrap", "steady", "scale", "reconnect", "failover", "renewal"}

var runPhase = map[string]func(context.Context, *environment, options) error{
	"bootstrap": runBootstrap,
	"steady":    runSteady,
	"scale":     runScale,
	"reconnect": measureReconnect,
	"failover":  measureFailover,
	"renewal":   measureRenewal,
}

func runSteady(ctx context.Context, env *environment, o options) error {
	if err := env.register(ctx, o.steady, o.concurrency); err != nil {
		return err
	}
	res, err := measureSteady(ctx, env, o.steady, o.concurrency)
	if err != nil {
		return err
	}
	res.print()
	return nil
}

func runBootstrap(ctx context.Context, env *environment, o options) error {
	// Only the clusters that bootstrap: the server's status writes after
	// registrations are over before the first window starts.
	n := min(o.bootstraps, o.agents)
	if err := env.register(ctx, n, o.concurrency); err != nil {
		return err
	}
	issue, err := measureIssuance()
	if err != nil {
		return err
	}
	floor, err := env.startFloor(ctx)
	if err != nil {
		return err
	}
	defer floor.stop()
	boot, err := measureBootstrap(ctx, env, floor, n, max(o.rounds, 1), o.concurrency, o.cpuProfile)
	if err != nil {
		return err
	}
	boot.print(issue)
	return nil
}

func runScale(ctx context.Context, env *environment, o options) error {
	if err := env.register(ctx, o.agents, o.concurrency); err != nil {
		return err
	}
	certs, err := env.issueCerts(o.agents, time.Hour)
	if err != nil {
		return err
	}
	var results []*scaleResult
	for _, shape := range o.scaleShapes {
		res, err := measureScale(ctx, env, certs, shape, o.concurrency)
		if err != nil {
			return fmt.Errorf("%s: %w", shape, err)
		}
		res.print()
		results = append(results, res)
	}
	printShapeRatio(results)
	return nil
}
