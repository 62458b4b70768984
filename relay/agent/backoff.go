package agent

import "time"

// backoffJitter is the largest share of a delay that jitter adds to it.
const backoffJitter = 0.5

// backoff is an exponential backoff with jitter: each delay is the base,
// which doubles at each step up to limit, plus up to half of it at random,
// so that agents that fail together do not retry together.
type backoff struct {
	initial, limit, next time.Duration
	// random returns a fraction in [0, 1).
	random func() float64
}

// newBackoff returns a backoff whose first base delay is initial; random
// draws the jitter of each step.
func newBackoff(initial, limit time.Duration, random func() float64) *backoff {
	return &backoff{initial: initial, limit: limit, next: initial, random: random}
}

// Step returns the next delay.
func (b *backoff) Step() time.Duration {
	d := b.next
	b.next = min(2*b.next, b.limit)
	return d + time.Duration(b.random()*backoffJitter*float64(d))
}

// Reset starts again from the first delay.
func (b *backoff) Reset() { b.next = b.initial }
