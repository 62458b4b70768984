package server

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/types"
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
	s.endStreams("closed a stream whose client certificate the cluster no longer admits", kc.Name, func(_ string, st *stream) error {
		return checkAdmitted(kc, st.cert)
	})
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
	if ci == nil || ci == judged {
		return judged
	}
	s.endStreams("closed a stream whose client certificate's issuer or root is no longer admitted", "", func(cluster string, st *stream) error {
		return s.admitIssuer(cluster, st.cert, st.chains)
	})
	return ci
}

// expireStreams ends the open streams whose client certificate has expired.
func (s *service) expireStreams() {
	now := s.now()
	s.endStreams("closed a stream whose client certificate expired", "", func(cluster string, st *stream) error {
		return checkNotExpired(cluster, st.cert, now)
	})
}

// endStreams ends the open streams (with a certificate) of cluster, or of
// every cluster when cluster is "", that refused refuses, and counts and logs each with msg once the connections lock is
// released: relay_client_certificates_refused_total{at="stream"} by the
// refusal's reason.
func (s *service) endStreams(msg, cluster string, refused func(cluster string, st *stream) error) {
	type ended struct {
		cluster string
		err     error
	}
	var all []ended
	s.conns.evictWhere(cluster, func(name string, st *stream) error {
		err := refused(name, st)
		if err != nil {
			all = append(all, ended{name, err})
		}
		return err
	})
	perCluster := map[string]int{}
	for _, e := range all {
		s.clientRefused.WithLabelValues("stream", reasonOf(e.err)).Inc()
		s.log.Info(msg, "cluster", e.cluster, "reason", reasonOf(e.err), "error", e.err.Error())
		perCluster[e.cluster]++
	}
	for _, e := range all {
		n := perCluster[e.cluster]
		if n == 0 {
			continue
		}
		delete(perCluster, e.cluster)
		if kc := s.cachedCluster(e.cluster); kc != nil {
			s.events.evicted(kc, n, reasonOf(e.err), e.err)
		}
	}
}

// cachedCluster returns cluster's KubernetesCluster from the cache, or nil
// when it has none or there is no cache yet.
func (s *service) cachedCluster(cluster string) *meshv1alpha1.KubernetesCluster {
	if s.reader == nil || s.events == nil {
		return nil
	}
	var kc meshv1alpha1.KubernetesCluster
	if err := s.reader.Get(context.Background(), types.NamespacedName{Namespace: s.cfg.Namespace, Name: cluster}, &kc); err != nil {
		return nil
	}
	return &kc
}
