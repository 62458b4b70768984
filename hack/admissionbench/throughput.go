package main

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshrelay/meshrelay/internal/procstat"
)

// idleWindow is how long relay-webhook's idle CPU is measured before the
// throughput phase, to be taken off what the phase used.
const idleWindow = 3 * time.Second

// throughput is what relay-webhook's process used over a phase of
// reviews from concurrent clients.
type throughput struct {
	reviews     int64
	elapsed     time.Duration
	cpu, idle   time.Duration
	concurrency int
}

// measureThroughput has concurrency clients create the measured secrets
// under their relay names for d, as dry runs (admission runs, nothing is
// stored, so relay-webhook's caches see no event): every create is one
// review. relay-webhook's process CPU over the phase, less its idle CPU,
// is its cost per review.
func measureThroughput(ctx context.Context, env *environment, concurrency int, d time.Duration) (*throughput, error) {
	t := &throughput{concurrency: concurrency}
	idle0, err := procstat.ProcessCPU(env.pid)
	if err != nil {
		return nil, err
	}
	time.Sleep(idleWindow)
	idle1, err := procstat.ProcessCPU(env.pid)
	if err != nil {
		return nil, err
	}
	t.idle = (idle1 - idle0) * time.Second / idleWindow

	var (
		reviews atomic.Int64
		failure atomic.Pointer[error]
		wg      sync.WaitGroup
	)
	cpu0, err := procstat.ProcessCPU(env.pid)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	deadline := start.Add(d)
	secrets := env.fixtures.measured
	for w := range concurrency {
		wg.Go(func() {
			for i := w; time.Now().Before(deadline) && ctx.Err() == nil; i++ {
				s := secrets[i%len(secrets)].DeepCopy()
				if _, err := env.secrets().Create(ctx, s, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}); err != nil {
					err = fmt.Errorf("failed to create secret %s (dry run): %w", s.Name, err)
					failure.CompareAndSwap(nil, &err)
					return
				}
				reviews.Add(1)
			}
		})
	}
	wg.Wait()
	t.elapsed = time.Since(start)
	cpu1, err := procstat.ProcessCPU(env.pid)
	if err != nil {
		return nil, err
	}
	if err := failure.Load(); err != nil {
		return nil, *err
	}
	t.reviews, t.cpu = reviews.Load(), cpu1-cpu0
	return t, nil
}

func (t *throughput) print() {
	busy := t.cpu - time.Duration(float64(t.idle)*t.elapsed.Seconds())
	perReview := busy / time.Duration(max(t.reviews, 1))
	fmt.Printf("\nthroughput: %d clients creating relay secrets (dry run) for %s: %d reviews, %.0f/s (the API server, on the same cores, sets this rate)\n",
		t.concurrency, t.elapsed.Round(time.Millisecond), t.reviews, float64(t.reviews)/t.elapsed.Seconds())
	fmt.Printf("  relay-webhook process CPU: %s over the phase, idle %s per second\n", t.cpu, t.idle.Round(100*time.Microsecond))
	fmt.Printf("  %.3f ms CPU per review: %.0f admission reviews per second per core\n", ms(perReview), float64(time.Second)/float64(perReview))
}
