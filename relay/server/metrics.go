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
	// trustIssued and trustFailures count Istio intermediates signed and
	// failures to issue or install one, by RootTrustPolicy.
	trustIssued   *prometheus.CounterVec
	trustFailures *prometheus.CounterVec
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
		trustIssued: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_istio_intermediates_issued_total",
			Help: "Istio intermediate CAs signed for workload clusters, by RootTrustPolicy.",
		}, []string{"policy"}),
		trustFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_istio_intermediate_failures_total",
			Help: "Failures to issue or install an Istio intermediate CA, by RootTrustPolicy and reason (root, bad_request, no_policy, agent).",
		}, []string{"policy", "reason"}),
	}
	reg.MustRegister(m.issued, m.refused, m.expiry, m.trustIssued, m.trustFailures)
	return m
}

func (m *metrics) setExpiry(name string, cert *x509.Certificate) {
	if cert != nil {
		m.expiry.WithLabelValues(name).Set(float64(cert.NotAfter.Unix()))
	}
}
