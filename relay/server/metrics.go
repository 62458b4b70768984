package server

import (
	"crypto/x509"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are relay-server's Prometheus metrics. The connection gauges keep
// the reference's names so that its verification steps work as written.
type metrics struct {
	push, pull   *prometheus.GaugeVec
	opened       *prometheus.CounterVec
	issued       *prometheus.CounterVec
	refused      *prometheus.CounterVec
	expiry       *prometheus.GaugeVec
	clientExpiry *prometheus.GaugeVec
}

// Certificate names in relay_certificate_expiry_timestamp_seconds.
const (
	certRoot         = "root"
	certIntermediate = "intermediate"
	certServer       = "server"
)

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		push: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "relay_push_clients_connected",
			Help: "Open push streams (agent to server), by cluster.",
		}, []string{"cluster"}),
		pull: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "relay_pull_clients_connected",
			Help: "Open pull streams (server to agent), by cluster.",
		}, []string{"cluster"}),
		opened: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_streams_opened_total",
			Help: "Push and pull streams opened, by cluster and stream; a steady value while connected means no reconnects.",
		}, []string{"cluster", "stream"}),
		issued: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_certificates_issued_total",
			Help: "Client certificates signed, by call (bootstrap or renew).",
		}, []string{"call"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_certificates_refused_total",
			Help: "Signing requests refused, by call and reason.",
		}, []string{"call", "reason"}),
		expiry: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "relay_certificate_expiry_timestamp_seconds",
			Help: "NotAfter of the server's own certificates (root, intermediate, server), in Unix seconds.",
		}, []string{"certificate"}),
		clientExpiry: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "relay_client_certificate_expiry_timestamp_seconds",
			Help: "NotAfter of each cluster's client certificate, as last issued or reported, in Unix seconds.",
		}, []string{"cluster"}),
	}
	reg.MustRegister(m.push, m.pull, m.opened, m.issued, m.refused, m.expiry, m.clientExpiry)
	return m
}

func (m *metrics) connected(kind streamKind, cluster string) prometheus.Gauge {
	if kind == pushStream {
		return m.push.WithLabelValues(cluster)
	}
	return m.pull.WithLabelValues(cluster)
}

func (m *metrics) setExpiry(name string, cert *x509.Certificate) {
	if cert != nil {
		m.expiry.WithLabelValues(name).Set(float64(cert.NotAfter.Unix()))
	}
}
