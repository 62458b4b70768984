// Command loadgen measures relay-server under load, in its own process
// against a relay-server process on a local cluster:
//
//   - bootstrap throughput: many agents, each a new TLS connection with the
//     identity token and a CSR, and its ratio to pkg/pki's issuance speed
//     measured in the same run;
//   - scale: N agents holding push and pull streams over mutual TLS, the
//     server's memory per connected agent and the time until all connect.
//
// make bench runs it after the Go benchmarks.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"
)

type options struct {
	server      string
	agents      int
	bootstraps  int
	concurrency int
	timeout     time.Duration
	profileDir  string
}

func main() {
	var o options
	flag.StringVar(&o.server, "server-binary", "bin/relay-server", "relay-server binary to measure")
	flag.IntVar(&o.agents, "agents", 10000, "agents holding push and pull streams in the scale phase")
	flag.IntVar(&o.bootstraps, "bootstraps", 2000, "bootstraps in the throughput phase")
	flag.IntVar(&o.concurrency, "concurrency", 32, "calls in flight at once")
	flag.DurationVar(&o.timeout, "timeout", 15*time.Minute, "give up after this long")
	flag.StringVar(&o.profileDir, "profile-dir", "bin/loadgen", "where the server's heap profiles before and after the scale phase are kept")
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
	env, err := startEnvironment(ctx, o.server)
	if err != nil {
		return err
	}
	defer env.stop()
	env.profileDir = o.profileDir
	fmt.Printf("relay-server %s on a local cluster; %d agents, %d bootstraps, concurrency %d\n", env.addr, o.agents, o.bootstraps, o.concurrency)

	if err := env.register(ctx, max(o.agents, 1), o.concurrency); err != nil {
		return err
	}
	issue, err := measureIssuance()
	if err != nil {
		return err
	}
	boot, err := measureBootstrap(ctx, env, o.bootstraps, o.concurrency)
	if err != nil {
		return err
	}
	fmt.Printf("\nbootstrap throughput: %.0f bootstraps/s over %d new TLS connections (%s)\n", boot.perSecond, boot.count, boot.elapsed.Round(time.Millisecond))
	fmt.Printf("pkg/pki issuance in this process: %s per certificate = %.0f/s on one core\n", issue.Round(time.Microsecond), float64(time.Second)/float64(issue))
	fmt.Printf("ratio bootstrap/issuance: %.2f\n", boot.perSecond/(float64(time.Second)/float64(issue)))

	scale, err := measureScale(ctx, env, o.agents, o.concurrency)
	if err != nil {
		return err
	}
	fmt.Printf("\nscale: %d agents connected (push and pull) in %s\n", scale.agents, scale.elapsed.Round(time.Millisecond))
	perAgent := func(before, after float64) float64 { return (after - before) / float64(scale.agents) / 1024 }
	fmt.Printf("server heap in use: %.1f MiB before, %.1f MiB after: %.1f KiB per agent (goal 40 KiB)\n",
		scale.heapBefore/(1<<20), scale.heapAfter/(1<<20), perAgent(scale.heapBefore, scale.heapAfter))
	fmt.Printf("server goroutine stacks: %.1f MiB before, %.1f MiB after: %.1f KiB per agent\n",
		scale.stackBefore/(1<<20), scale.stackAfter/(1<<20), perAgent(scale.stackBefore, scale.stackAfter))
	fmt.Printf("server resident memory: %.1f MiB before, %.1f MiB after: %.1f KiB per agent\n",
		scale.rssBefore/(1<<20), scale.rssAfter/(1<<20), (scale.rssAfter-scale.rssBefore)/float64(scale.agents)/1024)
	fmt.Printf("server goroutines: %.0f before, %.0f after\n", scale.goroutinesBefore, scale.goroutinesAfter)
	return nil
}
