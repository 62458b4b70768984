package agent

import (
	"sync"
	"time"
)

// renewAt is the renewal time the server set last (Instruction.renew_at),
// shared by the streams of every replica, which receive it, and the
// rotator, which runs on the leader: a replica that takes the Lease later
// still knows it. It holds for the certificate the agent used when it came
// (serial): once another certificate is in use the renewal was done, and
// the time no longer applies.
type renewAt struct {
	mu     sync.Mutex
	at     time.Time
	reason string
	serial string
	set    bool
	// wake tells the rotator to look again.
	wake signal
}

func newRenewAt() *renewAt { return &renewAt{wake: newSignal()} }

// request records the server's time for the certificate with serial,
// replacing an earlier one, and wakes the rotator.
func (r *renewAt) request(at time.Time, reason, serial string) {
	r.mu.Lock()
	r.at, r.reason, r.serial, r.set = at, reason, serial, true
	r.mu.Unlock()
	r.wake.notify()
}

// forCert returns the server's time for the certificate with serial, and
// whether there is one: a time set while another certificate was in use
// is dropped.
func (r *renewAt) forCert(serial string) (time.Time, string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.set {
		return time.Time{}, "", false
	}
	if r.serial != serial {
		r.set = false
		return time.Time{}, "", false
	}
	return r.at, r.reason, true
}
