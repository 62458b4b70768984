package agent

import (
	"crypto/x509"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshrelay/meshrelay/pkg/pki"
	"github.com/meshrelay/meshrelay/pkg/version"
)

// agentMetrics are relay-agent's Prometheus metrics, in a registry per
// Agent (tests run several in one process). /metrics serves it beside
// controller-runtime's registry, which holds the Go and process collectors
// and the client, workqueue and leader-election metrics.
type agentMetrics struct {
	registry *prometheus.Registry
	// cert holds the gauges of the client certificate the agent connects
	// with, which the watcher sets.
	cert      certGauges
	connected *prometheus.GaugeVec
	// reconnects counts the relay sessions that ended; handovers the moves
	// of the streams to a connection with a renewed certificate.
	reconnects prometheus.Counter
	handovers  prometheus.Counter
	rotations  *prometheus.CounterVec
	// rootExpiry is the NotAfter of each trust anchor, by its SHA-256;
	// bundleUpdates counts the trust bundles from the server by result.
	rootExpiry    *prometheus.GaugeVec
	bundleUpdates *prometheus.CounterVec
	// istioExpiry, istioRootExpiry and istioFailures cover the Istio
	// intermediate CA and the roots of root-cert.pem (federated trust).
	istioExpiry     prometheus.Gauge
	istioRootExpiry *prometheus.GaugeVec
	istioFailures   prometheus.Counter
}

func newAgentMetrics() *agentMetrics {
	m := &agentMetrics{
		registry: prometheus.NewRegistry(),
		cert: certGauges{
			NotAfter: prometheus.NewGauge(prometheus.GaugeOpts{
				Name: "relay_agent_client_certificate_expiry_timestamp_seconds",
				Help: "NotAfter of the client certificate the agent connects with, in Unix seconds.",
			}),
			NotBefore: prometheus.NewGauge(prometheus.GaugeOpts{
				Name: "relay_agent_client_certificate_not_before_timestamp_seconds",
				Help: "NotBefore of the client certificate the agent connects with, in Unix seconds.",
			}),
			Renewal: prometheus.NewGauge(prometheus.GaugeOpts{
				Name: "relay_agent_client_certificate_renewal_timestamp_seconds",
				Help: "When the rotator renews the client certificate the agent connects with at the latest (NotAfter less the grace ratio of its lifetime; jitter only brings it earlier), in Unix seconds. Past it, a renewal is overdue.",
			}),
		},
		connected: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "relay_agent_stream_connected",
			Help: "1 while the agent's push or pull stream to the server is open; a Connect stream, which carries both, sets both.",
		}, []string{"stream"}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "relay_agent_stream_reconnects_total",
			Help: "Times the agent's connection to the relay server ended and it connected again: its streams dropped (the server stopped, refused, or the network failed).",
		}),
		handovers: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "relay_agent_stream_handovers_total",
			Help: "Times the agent moved its streams to a new connection made with its renewed client certificate, opened before the old one closed: not a drop.",
		}),
		rotations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_agent_certificate_rotations_total",
			Help: "Attempts by the rotator to obtain a client certificate, by result (succeeded or failed).",
		}, []string{"result"}),
		rootExpiry: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "relay_agent_trust_root_expiry_timestamp_seconds",
			Help: "NotAfter of each root the agent verifies the relay server with (its trust anchors: the trust bundle folder or relay-root-tls-secret, and the server's latest trust bundle), by the root's SHA-256 fingerprint, in Unix seconds. A root that leaves the anchors leaves the metric.",
		}, []string{"sha256"}),
		bundleUpdates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_agent_trust_bundle_updates_total",
			Help: "Trust bundles from the relay server, by result: accepted (taken as trust anchors at once), refused (did not decode, or verified not the server it came from), persisted (stored in this cluster's relay-root-tls-secret and ClusterTrustBundle by the leader) and failed (an attempt to store one failed; it is retried).",
		}, []string{"result"}),
		istioExpiry: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "relay_agent_istio_intermediate_expiry_timestamp_seconds",
			Help: "NotAfter of the Istio intermediate CA in the Istio CA secret (istio-system/cacerts), in Unix seconds.",
		}),
		istioRootExpiry: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "relay_agent_istio_root_expiry_timestamp_seconds",
			Help: "NotAfter of each root in root-cert.pem of the Istio CA secret (istio-system/cacerts), by root SHA-256, in Unix seconds; during a RootTrustPolicy's root change it holds the new root and those it replaced.",
		}, []string{"sha256"}),
		istioFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "relay_agent_istio_intermediate_failures_total",
			Help: "Failures to make, or to install into the Istio CA secret, an Istio intermediate CA.",
		}),
	}
	m.registry.MustRegister(m.cert.NotAfter, m.cert.NotBefore, m.cert.Renewal, m.connected, m.reconnects, m.handovers, m.rotations, m.rootExpiry, m.bundleUpdates,
		m.istioExpiry, m.istioRootExpiry, m.istioFailures, version.NewBuildInfo("relay_agent"))
	for _, result := range []string{"accepted", "refused", "persisted", "failed"} {
		m.bundleUpdates.WithLabelValues(result)
	}
	return m
}

// setRoots makes the root expiry metric show exactly roots.
func (m *agentMetrics) setRoots(roots []*x509.Certificate) {
	m.rootExpiry.Reset()
	for _, r := range roots {
		m.rootExpiry.WithLabelValues(pki.Fingerprint(r)).Set(float64(r.NotAfter.Unix()))
	}
}

// certGauges are the gauges of the agent's client certificate.
type certGauges struct {
	NotBefore, NotAfter, Renewal prometheus.Gauge
}
