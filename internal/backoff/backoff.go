// Package backoff is the exponential backoff with jitter that relay-agent
// waits with between attempts (reconnecting its streams, renewing its
// certificate, storing a trust bundle). It is a package of its own so that
// the load generator's simulated agents retry exactly as agents do, and a
// storm it measures is the one production would see.
package backoff

import "time"

// Jitter is the largest share of a delay that jitter adds to it.
const Jitter = 0.5

// Backoff is an exponential backoff with jitter: each delay is the base,
// which doubles at each step up to a limit, plus up to half of it at
// random, so that agents that fail together do not retry together. A
// Backoff is not safe for concurrent use.
type Backoff struct {
	initial, limit, next time.Duration
	// random returns a fraction in [0, 1).
	random func() float64
}

// New returns a backoff whose first base delay is initial and whose base
// stops growing at limit; random draws the jitter of each step, a fraction
// in [0, 1).
func New(initial, limit time.Duration, random func() float64) *Backoff {
	return &Backoff{initial: initial, limit: limit, next: initial, random: random}
}

// Step returns the next delay.
func (b *Backoff) Step() time.Duration {
	d := b.next
	b.next = min(2*b.next, b.limit)
	return d + time.Duration(b.random()*Jitter*float64(d))
}

// Reset starts again from the first delay.
func (b *Backoff) Reset() { b.next = b.initial }
