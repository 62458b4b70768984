package server

import (
	"maps"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// trustRootMetrics are the expiry of the roots each RootTrustPolicy's
// clusters trust in root-cert.pem: the policy's root, and during the
// overlap of a root change the roots it replaced. It is safe for
// concurrent use.
type trustRootMetrics struct {
	expiry *prometheus.GaugeVec

	mu sync.Mutex
	// roots are the series set, by policy and then root fingerprint.
	roots map[string]map[string]time.Time
}

func newTrustRootMetrics(reg prometheus.Registerer) *trustRootMetrics {
	m := &trustRootMetrics{
		expiry: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "relay_trust_policy_root_expiry_timestamp_seconds",
			Help: "NotAfter of each root a RootTrustPolicy's clusters trust in istio-system/cacerts root-cert.pem (the policy's root, and during a root change the roots it replaced), by policy and root SHA-256, in Unix seconds.",
		}, []string{"policy", "sha256"}),
		roots: map[string]map[string]time.Time{},
	}
	reg.MustRegister(m.expiry)
	return m
}

// set makes roots, NotAfter by fingerprint, the series of policy: the
// series of roots it no longer trusts are removed.
func (m *trustRootMetrics) set(policy string, roots map[string]time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if maps.Equal(m.roots[policy], roots) {
		return
	}
	for sha := range m.roots[policy] {
		if _, ok := roots[sha]; !ok {
			m.expiry.DeleteLabelValues(policy, sha)
		}
	}
	for sha, notAfter := range roots {
		m.expiry.WithLabelValues(policy, sha).Set(float64(notAfter.Unix()))
	}
	m.roots[policy] = maps.Clone(roots)
}

// forget removes the series of policy: it was removed or has no usable
// root.
func (m *trustRootMetrics) forget(policy string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for sha := range m.roots[policy] {
		m.expiry.DeleteLabelValues(policy, sha)
	}
	delete(m.roots, policy)
}
