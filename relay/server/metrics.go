package server

import (
	"crypto/x509"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are relay-server's Prometheus metrics that are not per cluster;
// connections collects the per-cluster ones. The connection gauges keep
// the reference's names so that its verification steps work as written.
type metrics struct {
	issued  *prometheus.CounterVec
	refused *prometheus.CounterVec
	expiry  *prometheus.GaugeVec
}

// Certificate names in relay_certificate_expiry_timestamp_seconds.
const (
	certRoot         = "root"
	certIntermediate = "intermediate"
	certServer       = "server"
)

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
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
	}
	reg.MustRegister(m.issued, m.refused, m.expiry)
	return m
}

func (m *metrics) setExpiry(name string, cert *x509.Certificate) {
	if cert != nil {
		m.expiry.WithLabelValues(name).Set(float64(cert.NotAfter.Unix()))
	}
}
