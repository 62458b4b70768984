package server

import (
	"context"
	"crypto/x509"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/utils/clock"

	meshv1alpha1 "github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
)

// newClientRefused registers relay_client_certificates_refused_total: client
// certificates refused at the handshake and open streams ended, by where
// and why. Renew's refusals are in relay_certificates_refused_total.
func newClientRefused(reg prometheus.Registerer) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "relay_client_certificates_refused_total",
		Help: "Client certificates refused at the handshake (at=handshake) and open streams ended (at=stream), by reason (revoked, reregistered, expired, malformed, issuer).",
	}, []string{"at", "reason"})
	reg.MustRegister(c)
	return c
}

// evictRefused checks the open streams of kc's cluster against kc as it
// is now (its revocation, its UID) and ends those it no longer admits,
// each with its refusal. The KubernetesCluster watcher calls it on every
// change, on every replica.
func (s *service) evictRefused(kc *meshv1alpha1.KubernetesCluster) {
	var refused []error
	s.conns.evict(kc.Name, func(cert *x509.Certificate) error {
		err := checkAdmitted(kc, cert)
		if err != nil {
			refused = append(refused, err)
		}
		return err
	})
	for _, err := range refused {
		s.clientRefused.WithLabelValues("stream", reasonOf(err)).Inc()
		s.log.Info("closed a stream whose client certificate the cluster no longer admits", "cluster", kc.Name, "reason", reasonOf(err), "error", err.Error())
	}
}

// expiryInterval is how often open streams are checked for a client
// certificate past its NotAfter, and for one whose issuer or root is no
// longer admitted after the keyring reloaded: a stream ends at most this
// long after.
const expiryInterval = 250 * time.Millisecond

// runExpiry ends, every expiryInterval on clk, the open streams whose
// client certificate has expired, and those whose issuer is no longer
// admitted once the admitted client issuers changed, until ctx ends.
func (s *service) runExpiry(ctx context.Context, clk clock.WithTicker) error {
	t := clk.NewTicker(expiryInterval)
	defer t.Stop()
	var judged *clientIssuers
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C():
			s.expireStreams()
			judged = s.evictIssuers(judged)
		}
	}
}

// evictIssuers ends the open streams whose connection's chains no longer
// pass checkClientIssuer (admitIssuer), when the keyring holds client
// issuers other than judged, the set the streams were last checked
// against; it returns the set it checked them against. The keyring
// rebuilds the set on every load of the relay secrets: after the signing
// CA changed twice, a CA left clientIssuerSecret or a root left
// relay-root-tls-secret, the streams of certificates it no longer admits
// end here, and their calls are refused by admit.
func (s *service) evictIssuers(judged *clientIssuers) *clientIssuers {
	ci := s.keys.clientIssuers.Load()
	if ci == nil || ci == judged || s.cfg.Insecure {
		return judged
	}
	type ended struct {
		cluster string
		err     error
	}
	var refused []ended
	s.conns.evictWhere(func(cluster string, st *stream) error {
		err := s.admitIssuer(cluster, st.cert, st.chains)
		if err != nil {
			refused = append(refused, ended{cluster, err})
		}
		return err
	})
	for _, e := range refused {
		s.clientRefused.WithLabelValues("stream", reasonIssuer).Inc()
		s.log.Info("closed a stream whose client certificate's issuer or root is no longer admitted", "cluster", e.cluster, "error", e.err.Error())
	}
	return ci
}

// expireStreams ends the open streams whose client certificate has expired.
func (s *service) expireStreams() {
	type ended struct {
		cluster string
		err     error
	}
	now := s.now()
	var expired []ended
	s.conns.expire(now, func(cluster string, cert *x509.Certificate) error {
		err := checkNotExpired(cluster, cert, now)
		expired = append(expired, ended{cluster, err})
		return err
	})
	for _, e := range expired {
		s.clientRefused.WithLabelValues("stream", reasonExpired).Inc()
		s.log.Info("closed a stream whose client certificate expired", "cluster", e.cluster, "error", e.err.Error())
	}
}
