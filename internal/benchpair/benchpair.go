// Package benchpair runs a benchmark of meshrelay's code beside the bare
// standard-library calls it builds on, on the same inputs, so that a
// benchmark reports our cost as a ratio to that baseline.
package benchpair

import (
	"testing"
	"time"
)

// Run runs ours and stdlib as sub-benchmarks name/<label> and name/stdlib,
// then alternately in one name/paired sub-benchmark that reports the ratio
// of their total times as <label>/stdlib: on a busy machine, where the load
// drifts between the separate runs, that is the steadier figure.
func Run(b *testing.B, name, label string, ours, stdlib func() error) {
	for _, sub := range []struct {
		name string
		f    func() error
	}{{label, ours}, {"stdlib", stdlib}} {
		b.Run(name+"/"+sub.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := sub.f(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run(name+"/paired", func(b *testing.B) {
		var spent [2]time.Duration
		fs := [2]func() error{ours, stdlib}
		for i := 0; b.Loop(); i++ {
			for j := range 2 {
				f := (i + j) % 2 // alternate which goes first
				start := time.Now()
				if err := fs[f](); err != nil {
					b.Fatal(err)
				}
				spent[f] += time.Since(start)
			}
		}
		b.ReportMetric(float64(spent[0])/float64(spent[1]), label+"/stdlib")
	})
}
