package agent

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// agentMetrics are relay-agent's Prometheus metrics.
type agentMetrics struct {
	registry  *prometheus.Registry
	expiry    prometheus.Gauge
	connected *prometheus.GaugeVec
	rotations *prometheus.CounterVec
	// istioExpiry and istioFailures cover the Istio intermediate CA
	// (federated trust).
	istioExpiry   prometheus.Gauge
	istioFailures prometheus.Counter
}

func newAgentMetrics() *agentMetrics {
	m := &agentMetrics{
		registry: prometheus.NewRegistry(),
		expiry: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "relay_agent_client_certificate_expiry_timestamp_seconds",
			Help: "NotAfter of the client certificate the agent connects with, in Unix seconds.",
		}),
		connected: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "relay_agent_stream_connected",
			Help: "1 while the agent's push or pull stream to the server is open.",
		}, []string{"stream"}),
		rotations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_agent_certificate_rotations_total",
			Help: "Attempts by the rotator to obtain a client certificate, by result (succeeded or failed).",
		}, []string{"result"}),
		istioExpiry: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "relay_agent_istio_intermediate_expiry_timestamp_seconds",
			Help: "NotAfter of the Istio intermediate CA in the Istio CA secret (istio-system/cacerts), in Unix seconds.",
		}),
		istioFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "relay_agent_istio_intermediate_failures_total",
			Help: "Failures to make, or to install into the Istio CA secret, an Istio intermediate CA.",
		}),
	}
	m.registry.MustRegister(m.expiry, m.connected, m.rotations, m.istioExpiry, m.istioFailures, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}
