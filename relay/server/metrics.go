package server

import (
	"crypto/x509"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshrelay/meshrelay/pkg/version"
)

// metrics are relay-server's Prometheus metrics that are not per cluster;
// connections collects the per-cluster ones. The connection gauges keep
// the names of the compatible product's relay metrics, so that its
// verification steps work as written.
type metrics struct {
	issued  *prometheus.CounterVec
	refused *prometheus.CounterVec
	expiry  *prometheus.GaugeVec
	// notBefore is the NotBefore of the same certificates as expiry.
	notBefore *prometheus.GaugeVec
	// signing times the signing of a client certificate, by call.
	signing *prometheus.HistogramVec
	// trustIssued and trustFailures count Istio intermediates signed and
	// failures to issue or install one, by RootTrustPolicy.
	trustIssued   *prometheus.CounterVec
	trustFailures *prometheus.CounterVec
	// grpc counts and times the calls of the relay gRPC server.
	grpc *grpcMetrics
	// trustRoots are the expiry of the roots RootTrustPolicies trust.
	trustRoots *trustRootMetrics
	// rotation are the metrics of the rotation of the server's own
	// certificates and of the trust bundle.
	rotation *rotationMetrics
}

// Certificate names in relay_certificate_expiry_timestamp_seconds and
// relay_certificate_not_before_timestamp_seconds. The root is the one that
// signs (tls.crt of the root secret, else the first of ca.crt); every root
// of the trust bundle has relay_trust_bundle_root_expiry_timestamp_seconds.
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
		notBefore: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "relay_certificate_not_before_timestamp_seconds",
			Help: "NotBefore of the server's own certificates (root, intermediate, server), in Unix seconds.",
		}, []string{"certificate"}),
		signing: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "relay_certificate_signing_duration_seconds",
			Help: "Time to sign a client certificate's CSR (checks of the CSR included), by call (bootstrap or renew).",
			// 100µs to about 1.6s, doubling: an ECDSA signature takes well
			// under a millisecond, an RSA one a few, a starved CPU more.
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 15),
		}, []string{"call"}),
		trustIssued: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_istio_intermediates_issued_total",
			Help: "Istio intermediate CAs signed for workload clusters, by RootTrustPolicy.",
		}, []string{"policy"}),
		trustFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_istio_intermediate_failures_total",
			Help: "Failures to issue or install an Istio intermediate CA, by RootTrustPolicy and reason (root, bad_request, no_policy, agent).",
		}, []string{"policy", "reason"}),
	}
	reg.MustRegister(m.issued, m.refused, m.expiry, m.notBefore, m.signing, m.trustIssued, m.trustFailures,
		version.NewBuildInfo("relay_server"))
	m.grpc = newGRPCMetrics(reg)
	m.trustRoots = newTrustRootMetrics(reg)
	m.rotation = newRotationMetrics(reg)
	return m
}

// setExpiry sets the NotBefore and NotAfter gauges of the server's
// certificate name (root, intermediate or server) to cert's.
func (m *metrics) setExpiry(name string, cert *x509.Certificate) {
	if cert != nil {
		m.expiry.WithLabelValues(name).Set(float64(cert.NotAfter.Unix()))
		m.notBefore.WithLabelValues(name).Set(float64(cert.NotBefore.Unix()))
	}
}

// observeSigning records that signing a certificate for call began at
// begun. Latency is measured on the monotonic wall clock, not the server's
// injected clock, which tests may hold still.
func (m *metrics) observeSigning(call string, begun time.Time) {
	m.signing.WithLabelValues(call).Observe(time.Since(begun).Seconds())
}
