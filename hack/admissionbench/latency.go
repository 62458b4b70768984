package main

import (
	"context"
	"fmt"
	"math"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshrelay/meshrelay/internal/procstat"
)

// warmup is how many creates of each secret and arm precede the measured
// rounds: the API server's webhook client, relay-webhook's caches and both
// processes' heaps settle first.
const warmup = 20

// arm is where the API server sent a create for review: to relay-webhook,
// to the floor (a webhook that admits everything), or nowhere.
type arm int

const (
	with arm = iota
	floor
	without
	arms
)

// renamed returns s under the name that sends its create to arm a.
func renamed(s *corev1.Secret, a arm) *corev1.Secret {
	u := s.DeepCopy()
	switch a {
	case floor:
		u.Name += floorSuffix
	case without:
		u.Name += unmatchedSuffix
	}
	return u
}

// latencies are every create's latency, by secret and arm, and the p50
// each round added, for the spread between rounds.
type latencies struct {
	names     []string
	samples   [][arms][]time.Duration
	roundAdds []time.Duration
	rounds    int
	dryRun    bool
	// conns are the distinct connections the API server opened to
	// relay-webhook during the rounds, and open those open at the end.
	conns, open int
	// cpu and floorCPU are relay-webhook's and the floor's process CPU
	// over the rounds.
	cpu, floorCPU time.Duration
	// call, floorCall and handler are the mean time of the API server's
	// call of relay-webhook and of the floor, and of relay-webhook's
	// handler, from their metrics.
	call, floorCall, handler time.Duration
	// gcs are relay-webhook's garbage collections over the rounds.
	gcs float64
}

// measureLatency creates each measured secret rounds×creates times under
// its relay name (relay-webhook reviews it), as many times under a name
// only the floor's configuration matches, and as many under a name no
// webhook configuration matches, rotating request by request which arm
// goes first, and deletes each after its create. Only the create is
// timed.
func measureLatency(ctx context.Context, env *environment, rounds, creates int, dryRun bool) (*latencies, error) {
	secrets := env.fixtures.measured
	l := &latencies{samples: make([][arms][]time.Duration, len(secrets)), rounds: rounds, dryRun: dryRun}
	opts := metav1.CreateOptions{}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	for _, s := range secrets {
		l.names = append(l.names, s.Name)
	}
	create := func(s *corev1.Secret, a arm) (time.Duration, error) {
		obj := renamed(s, a)
		start := time.Now()
		_, err := env.secrets().Create(ctx, obj, opts)
		d := time.Since(start)
		if err != nil {
			return 0, fmt.Errorf("failed to create secret %s: %w", obj.Name, err)
		}
		if dryRun {
			return d, nil
		}
		if err := env.secrets().Delete(ctx, obj.Name, metav1.DeleteOptions{}); err != nil {
			return 0, fmt.Errorf("failed to delete secret %s: %w", obj.Name, err)
		}
		return d, nil
	}
	for i := range warmup {
		for _, s := range secrets {
			for a := range arms {
				if _, err := create(s, (a+arm(i))%arms); err != nil {
					return nil, err
				}
			}
		}
	}
	seen := map[string]bool{}
	times0, err := env.scrapeCallTimes(ctx)
	if err != nil {
		return nil, err
	}
	cpu0, err := procstat.ProcessCPU(env.pid)
	if err != nil {
		return nil, err
	}
	floor0, err := procstat.ProcessCPU(env.floorPid)
	if err != nil {
		return nil, err
	}
	for r := range rounds {
		var round [arms][]time.Duration
		for i := range creates {
			for k, s := range secrets {
				first := (i + r + k) % int(arms)
				for j := range int(arms) {
					a := arm((first + j) % int(arms))
					d, err := create(s, a)
					if err != nil {
						return nil, err
					}
					l.samples[k][a] = append(l.samples[k][a], d)
					round[a] = append(round[a], d)
				}
			}
		}
		l.roundAdds = append(l.roundAdds, percentile(round[with], 0.5)-percentile(round[without], 0.5))
		open, err := webhookConnections(env.webhookAddr)
		if err != nil {
			return nil, err
		}
		for _, c := range open {
			seen[c] = true
		}
		l.open = len(open)
	}
	cpu1, err := procstat.ProcessCPU(env.pid)
	if err != nil {
		return nil, err
	}
	floor1, err := procstat.ProcessCPU(env.floorPid)
	if err != nil {
		return nil, err
	}
	times1, err := env.scrapeCallTimes(ctx)
	if err != nil {
		return nil, err
	}
	l.call, l.floorCall, l.handler = times0.means(times1)
	l.gcs = times1.gcs - times0.gcs
	l.conns, l.cpu, l.floorCPU = len(seen), cpu1-cpu0, floor1-floor0
	return l, nil
}

func (l *latencies) print() {
	n := len(l.samples[0][with])
	what := "create"
	if l.dryRun {
		what = "dry-run create"
	}
	fmt.Printf("\nlatency: a relay secret's %s at the API server, %d times each: reviewed by relay-webhook, by the floor (a webhook that admits all), and by none (same secret, other names), per secret, rotating request by request over %d rounds, same client\n",
		what, n, l.rounds)
	fmt.Printf("  %-35s %9s %9s %9s   (ms; every latency kept, µs resolution)\n", "", "p50", "p90", "p99")
	var all [arms][]time.Duration
	for k, name := range l.names {
		for a := range arms {
			all[a] = append(all[a], l.samples[k][a]...)
		}
		l.printSecret(name, l.samples[k])
	}
	p50, p99, floor50 := l.printSecret("both", all)
	fmt.Printf("  relay-webhook's added p50, each round: %s ms\n", spread(l.roundAdds))
	verdict := "met"
	if p50 > goalP50 || p99 > goalP99 {
		verdict = "not met"
	}
	fmt.Printf("  relay-webhook adds %.3f ms at p50 (goal <= %.0f ms) and %.3f ms at p99 (goal <= %.0f ms): goal %s\n",
		ms(p50), ms(goalP50), ms(p99), ms(goalP99), verdict)
	fmt.Printf("  of its p50, the floor (any webhook) %.3f ms, relay-webhook's own work %.3f ms\n", ms(floor50), ms(p50-floor50))
	fmt.Printf("  mean API server call (%s): relay-webhook %.3f ms, of which its handler %.3f ms (%s); the floor %.3f ms\n",
		apiServerCall, ms(l.call), ms(l.handler), handlerTime, ms(l.floorCall))
	reviews := 0
	for _, s := range l.samples {
		reviews += len(s[with])
	}
	events := "the review, and its caches' watch events of the create and the delete"
	if l.dryRun {
		events = "the review alone"
	}
	fmt.Printf("  process CPU per reviewed create: relay-webhook %.3f ms (%s), the floor %.3f ms\n",
		ms(l.cpu)/float64(reviews), events, ms(l.floorCPU)/float64(reviews))
	fmt.Printf("  connections from the API server to relay-webhook: %d seen over the rounds, %d open at the end; relay-webhook's garbage collections: %.0f\n", l.conns, l.open, l.gcs)
}

// printSecret prints the latencies of one secret in each arm and what
// relay-webhook and the floor add, and returns what relay-webhook adds at
// p50 and p99, and what the floor adds at p50.
func (l *latencies) printSecret(name string, s [arms][]time.Duration) (added50, added99, floor50 time.Duration) {
	qs := []float64{0.5, 0.9, 0.99}
	var p [arms][]time.Duration
	for a := range arms {
		for _, q := range qs {
			p[a] = append(p[a], percentile(s[a], q))
		}
	}
	row := func(label string, v []time.Duration) {
		fmt.Printf("  %-24s %-10s %9.3f %9.3f %9.3f\n", name, label, ms(v[0]), ms(v[1]), ms(v[2]))
		name = ""
	}
	added := func(a arm) []time.Duration {
		d := make([]time.Duration, len(qs))
		for i := range qs {
			d[i] = p[a][i] - p[without][i]
		}
		return d
	}
	row("webhook", p[with])
	row("floor", p[floor])
	row("none", p[without])
	relay, least := added(with), added(floor)
	row("added", relay)
	row("floor adds", least)
	return relay[0], relay[2], least[0]
}

// percentile returns the q-quantile of d by nearest rank; d is sorted in
// place.
func percentile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	slices.Sort(d)
	i := int(math.Ceil(q*float64(len(d)))) - 1
	return d[max(i, 0)]
}

// spread renders durations as min..max, median, in ms.
func spread(d []time.Duration) string {
	s := slices.Clone(d)
	slices.Sort(s)
	return fmt.Sprintf("%.3f..%.3f (median %.3f)", ms(s[0]), ms(s[len(s)-1]), ms(percentile(s, 0.5)))
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
