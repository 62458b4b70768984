package pki

import (
	"crypto/x509"
	"fmt"
	"time"
)

// CheckGraceRatio returns an error unless 0 < ratio < 1.
func CheckGraceRatio(ratio float64) error {
	if !(ratio > 0 && ratio < 1) {
		return fmt.Errorf("grace period ratio %v must be between 0 and 1: 0.1 renews a one-year certificate 36.5 days before it expires", ratio)
	}
	return nil
}

// RenewalTime returns when to renew cert: when ratio of its lifetime is
// left, that is notAfter − ratio × (notAfter − notBefore), moved earlier by
// jitter × ratio × lifetime so that many agents do not renew at once.
// jitter is a fraction in [0, 1), for example rand.Float64(); values outside
// are clamped. The result is never before notBefore.
func RenewalTime(cert *x509.Certificate, ratio, jitter float64) (time.Time, error) {
	return RenewAt(cert.NotBefore, cert.NotAfter, ratio, jitter)
}

// RenewAt is RenewalTime for a certificate known only by its validity, such
// as one another process reports.
func RenewAt(notBefore, notAfter time.Time, ratio, jitter float64) (time.Time, error) {
	if err := CheckGraceRatio(ratio); err != nil {
		return time.Time{}, err
	}
	jitter = min(max(jitter, 0), 1)
	lifetime := notAfter.Sub(notBefore)
	if lifetime <= 0 {
		return time.Time{}, fmt.Errorf("certificate NotAfter %s is not after NotBefore %s", notAfter.UTC(), notBefore.UTC())
	}
	grace := time.Duration(float64(lifetime) * ratio * (1 + jitter))
	at := notAfter.Add(-grace)
	if at.Before(notBefore) {
		at = notBefore
	}
	return at, nil
}

// CheckValidity returns an error when cert is not valid at now: expired or
// not yet valid, with the times that say by how much.
func CheckValidity(cert *x509.Certificate, now time.Time) error {
	switch {
	case now.After(cert.NotAfter):
		return fmt.Errorf("certificate expired at %s, %s ago", cert.NotAfter.UTC().Format(time.RFC3339), now.Sub(cert.NotAfter).Round(time.Second))
	case now.Before(cert.NotBefore):
		return fmt.Errorf("certificate is not valid until %s, %s from now: check the clocks", cert.NotBefore.UTC().Format(time.RFC3339), cert.NotBefore.Sub(now).Round(time.Second))
	}
	return nil
}

// InRotationWindow reports whether now is past the point where ratio of
// cert's lifetime is left (without jitter).
func InRotationWindow(cert *x509.Certificate, ratio float64, now time.Time) (bool, error) {
	at, err := RenewalTime(cert, ratio, 0)
	if err != nil {
		return false, err
	}
	return !now.Before(at), nil
}
