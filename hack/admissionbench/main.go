// Command admissionbench measures what relay-webhook adds to a relay
// secret's create at the API server, in its own process against a
// relay-webhook process on a local cluster:
//
//   - latency: relay secrets (a client secret with its chain, a signing
//     secret) created again and again, each create with the webhook
//     called (a relay secret's name) beside the same create that the
//     webhook configuration does not match (another name), alternating
//     request by request, same client, same run; every latency kept, so
//     that p50, p90 and p99 are exact, not the API server's coarse
//     histogram buckets;
//   - throughput: relay-webhook's process CPU per admission review, as
//     reviews per second per core, for sizing.
//
// relay-webhook is the built binary, run as the workload overlay's
// Deployment runs it (its args, environment and ServiceAccount), and the
// API server calls it through the overlay's ValidatingWebhookConfiguration
// pointed at its local address. make bench runs it after the Go
// benchmarks.
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

// The goal: what relay-webhook may add to a relay secret's create.
const (
	goalP50 = time.Millisecond
	goalP99 = 3 * time.Millisecond
)

type options struct {
	bins        string
	rounds      int
	creates     int
	dryRun      bool
	concurrency int
	throughput  time.Duration
	cpuProfile  time.Duration
	profileDir  string
	timeout     time.Duration
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == floorCommand {
		// The floor serves until it is killed: it returns only on failure.
		fmt.Fprintf(os.Stderr, "admissionbench floor: %v\n", floorMain(os.Args[2:]))
		os.Exit(1)
	}
	var o options
	flag.StringVar(&o.bins, "bin-dir", "bin", "folder holding the built relay-webhook (make build)")
	flag.IntVar(&o.rounds, "rounds", 10, "latency rounds; each creates every secret --creates times with the webhook and as many times without, alternating")
	flag.IntVar(&o.creates, "creates", 100, "creates of each secret, with and without the webhook, per round")
	flag.BoolVar(&o.dryRun, "dry-run", false, "make the latency rounds' creates dry runs: admission runs, nothing is stored, and relay-webhook's caches see no event")
	flag.IntVar(&o.concurrency, "concurrency", 4, "clients creating at once in the throughput phase")
	flag.DurationVar(&o.throughput, "throughput", 10*time.Second, "how long the throughput phase creates (0 skips it)")
	flag.DurationVar(&o.cpuProfile, "cpu-profile", 0, "when set, run relay-webhook with --enable-profiling and keep its CPU profile over this long from the start of the latency rounds, in --profile-dir")
	flag.StringVar(&o.profileDir, "profile-dir", "bin/admissionbench", "where the CPU profile is written")
	flag.DurationVar(&o.timeout, "timeout", 15*time.Minute, "give up after this long")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	if err := run(ctx, o); err != nil {
		fmt.Fprintf(os.Stderr, "admissionbench: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options) error {
	env, err := startEnvironment(ctx, o)
	if err != nil {
		return err
	}
	defer env.stop()
	fmt.Printf("relay-webhook %s (%s, the workload overlay's Deployment) on a local kube-apiserver, pid %d\n", env.webhookAddr, env.binary, env.pid)

	var profile <-chan error
	if o.cpuProfile > 0 {
		profile = env.cpuProfile(ctx, o.profileDir, "relay-webhook-cpu.pprof", o.cpuProfile)
	}
	lat, err := measureLatency(ctx, env, o.rounds, o.creates, o.dryRun)
	if err != nil {
		return err
	}
	lat.print()
	if profile != nil {
		if err := <-profile; err != nil {
			return err
		}
	}
	if o.throughput > 0 {
		tp, err := measureThroughput(ctx, env, o.concurrency, o.throughput)
		if err != nil {
			return err
		}
		tp.print()
	}
	return nil
}
