package server

import (
	"crypto/x509"

	"github.com/prometheus/client_golang/prometheus"

	meshv1alpha1 "github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
	"github.com/meshrelay/meshrelay/pkg/pki"
)

// rotationMetrics are the metrics of the rotation of relay-server's own
// certificates. The phase and the rotation counters come from the leader,
// which rotates; every replica reports the roots of the bundle it serves.
type rotationMetrics struct {
	bundleRoots *prometheus.GaugeVec
	phase       *prometheus.GaugeVec
	rotations   *prometheus.CounterVec
	directed    prometheus.Counter
}

// Rotation results in relay_rotations_total.
const (
	resultSuccess = "success"
	resultFailure = "failure"
)

// phases are the values of relay_rotation_phase's phase label.
var phases = []meshv1alpha1.RotationPhase{meshv1alpha1.PhaseStable, meshv1alpha1.PhasePrepare, meshv1alpha1.PhaseActivate, meshv1alpha1.PhaseRetire}

func newRotationMetrics(reg prometheus.Registerer) *rotationMetrics {
	m := &rotationMetrics{
		bundleRoots: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "relay_trust_bundle_root_expiry_timestamp_seconds",
			Help: "NotAfter of each root in the trust bundle (relay-root-tls-secret's ca.crt), by the root's SHA-256, in Unix seconds.",
		}, []string{"sha256"}),
		phase: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "relay_rotation_phase",
			Help: "1 for the phase the root rotation is in (Stable, Prepare, Activate, Retire), 0 for the others; reported by the leader only.",
		}, []string{"phase"}),
		rotations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_rotations_total",
			Help: "Rotations of relay-server's own certificates, by certificate (root, intermediate, server) and result (success, failure); a root rotation counts once, when it completes.",
		}, []string{"certificate", "result"}),
		directed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "relay_directed_renewals_total",
			Help: "Renewal times relay-server sent to agents (RenewAt), spreading their renewals after a change of signing CA.",
		}),
	}
	reg.MustRegister(m.bundleRoots, m.phase, m.rotations, m.directed)
	return m
}

// setBundleRoots reports the roots of the trust bundle, replacing those
// reported before.
func (m *metrics) setBundleRoots(roots []*x509.Certificate) {
	m.rotation.bundleRoots.Reset()
	for _, r := range roots {
		m.rotation.bundleRoots.WithLabelValues(pki.Fingerprint(r)).Set(float64(r.NotAfter.Unix()))
	}
}

// setPhase reports phase as the current one.
func (m *rotationMetrics) setPhase(phase meshv1alpha1.RotationPhase) {
	for _, p := range phases {
		v := 0.0
		if p == phase {
			v = 1
		}
		m.phase.WithLabelValues(string(p)).Set(v)
	}
}

// counted counts one rotation of certificate with result.
func (m *rotationMetrics) counted(certificate, result string) {
	m.rotations.WithLabelValues(certificate, result).Inc()
}
