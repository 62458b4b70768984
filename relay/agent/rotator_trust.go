package agent

import (
	"crypto/x509"
	"fmt"
	"time"

	"github.com/meshrelay/meshrelay/pkg/pki"
)

// serverTime returns how long to wait before renewing leaf, the earlier of
// wait (the rotator's own schedule) and the renewal time the server set
// for it, never below zero; and, when the server's time is the one that
// has come, the reason to renew.
func (r *rotator) serverTime(leaf *x509.Certificate, wait time.Duration) (time.Duration, string) {
	o := &r.opts
	if o.RenewAt == nil {
		return wait, ""
	}
	at, reason, ok := o.RenewAt.forCert(leaf.SerialNumber.String())
	if !ok {
		return wait, ""
	}
	now := o.Clock.Now()
	until := max(at.Sub(now), 0)
	if until >= wait {
		return wait, ""
	}
	if !at.Equal(r.told) {
		r.told = at
		o.Log.WithName("rotator").V(1).Info("the server brought the renewal forward", "at", at.UTC(), "reason", reason,
			"schedule", now.Add(wait).UTC(), "serial", leaf.SerialNumber.Text(16))
	}
	if until > 0 {
		return until, ""
	}
	return 0, "the server's renewal time: " + reason
}

// foreign looks at a client certificate the relay server did not issue:
// it is never renewed nor replaced, and once it is due for renewal, or
// has expired, every look logs an error saying what to do. It returns how
// long to wait before looking again.
func (r *rotator) foreign(t *material, force string) time.Duration {
	o := &r.opts
	leaf := t.held
	serial := leaf.SerialNumber.Text(16)
	log := o.Log.WithName("rotator").WithValues("secret", o.ClientSecret.String(), "serial", serial, "issuer", leaf.Issuer.String(), "notAfter", leaf.NotAfter.UTC())
	if force != "" {
		log.V(1).Info("ignoring a renewal request: the client certificate was not issued by the relay server", "reason", force)
	}
	if o.RenewAt != nil {
		if _, reason, ok := o.RenewAt.forCert(leaf.SerialNumber.String()); ok {
			log.V(1).Info("ignoring the server's renewal time: the client certificate was not issued by the relay server", "reason", reason)
		}
	}
	now := o.Clock.Now()
	due, err := pki.RenewalTime(leaf, o.GraceRatio, 0)
	whose := fmt.Sprintf("client certificate %s in secret %s was issued by %q, not by the relay server, so relay-agent neither renews nor replaces it", serial, o.ClientSecret, leaf.Issuer.String())
	switch {
	case !now.Before(leaf.NotAfter):
		log.Error(fmt.Errorf("%s, and it expired at %s: renew it with its issuer and store it in the secret, or delete the secret and issue a bootstrap token (relayctl register) for the agent to get one from the relay server",
			whose, leaf.NotAfter.UTC().Format(time.RFC3339)), "client certificate of another issuer expired")
	case err == nil && !now.Before(due):
		log.Error(fmt.Errorf("%s; it is due for renewal since %s and expires at %s: renew it with its issuer and store it in the secret",
			whose, due.UTC().Format(time.RFC3339), leaf.NotAfter.UTC().Format(time.RFC3339)), "client certificate of another issuer is due for renewal")
	default:
		if r.foreignSerial != serial {
			r.foreignSerial = serial
			log.Info("using a client certificate of another issuer: relay-agent watches it and never renews it")
		}
		if err == nil {
			return due.Sub(now)
		}
	}
	return maxWait
}
