package agent

import (
	"crypto/x509"
	"math/rand/v2"
	"time"

	"github.com/meshrelay/meshrelay/pkg/pki"
)

// maxWait bounds one wait of the rotator: a look behind the long one-shot
// timer, so that a missed event or a clock jump is caught.
const maxWait = 10 * time.Minute

// The rotator's retry delays after a failure to obtain a certificate; the
// load generator's simulated agents retry a renewal with them too.
const (
	RotateRetryInitial = time.Second
	RotateRetryLimit   = time.Minute
)

// DefaultJitter spreads renewals over up to a fifth more of the grace
// period: the jitter fraction of a certificate's renewal time
// (pki.RenewalTime).
func DefaultJitter() float64 { return rand.Float64() * 0.2 }

// renewalWait returns how long to wait before renewing cert at now: until
// notAfter − ratio × (1 + jitter) × lifetime, or zero when that time has
// come (in the grace period, or expired).
func renewalWait(cert *x509.Certificate, ratio, jitter float64, now time.Time) (time.Duration, error) {
	at, err := pki.RenewalTime(cert, ratio, jitter)
	if err != nil {
		return 0, err
	}
	return max(at.Sub(now), 0), nil
}

// certJitter draws one jitter fraction per certificate and keeps it for the
// certificate's lifetime, so that the renewal time does not move at each
// look.
type certJitter struct {
	draw   func() float64
	serial string
	frac   float64
}

// of returns the jitter of the certificate with serial.
func (j *certJitter) of(serial string) float64 {
	if serial != j.serial {
		j.serial = serial
		j.frac = j.draw()
	}
	return j.frac
}
