package agent

import (
	"context"
	"crypto"
	"sync"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
	"github.com/meshrelay/meshrelay/pkg/pki"
	"github.com/meshrelay/meshrelay/pkg/relaysecret"
	relayv1 "github.com/meshrelay/meshrelay/relay/api/v1"
)

// istioCAOptions are what the Istio CA needs.
type istioCAOptions struct {
	// Secret is the Istio CA secret, istio-system/cacerts.
	Secret types.NamespacedName
	// Cache reads Secret as the watcher sees it; API reads and Writer
	// writes past the cache (cacerts, and the workloads to restart).
	Cache  client.Reader
	API    client.Reader
	Writer client.Client
	// Leading reports whether this replica holds the Lease: only the
	// leader makes keys.
	Leading func() bool
	// Push queues a CSR for the push stream.
	Push chan<- *relayv1.PushMessage
	// StatusChanged asks the push stream for a fresh status.
	StatusChanged func()
	// Expiry is set to cacerts' NotAfter; Failures counts failures.
	Expiry   prometheus.Gauge
	Failures prometheus.Counter
	Clock    clock.PassiveClock
	Log      logr.Logger
}

// istioCA is the agent's side of federated trust: asked by the server, it
// makes the intermediate CA key in this cluster, sends only a CSR, and
// writes what the server signs into istio-system/cacerts. It reports what
// cacerts holds in every status, so that the server knows when to renew.
type istioCA struct {
	opts istioCAOptions

	mu sync.Mutex
	// pending are the keys waiting for their signed certificate, by policy.
	pending map[string]crypto.Signer
	// state is what cacerts held when last read, with the last failure.
	state *relayv1.IstioCAStatus
	// failure is the last failure to make the key or install cacerts.
	failure, failedPolicy string
}

// newIstioCA returns an Istio CA that holds no key yet.
func newIstioCA(opts istioCAOptions) *istioCA {
	return &istioCA{opts: opts, pending: map[string]crypto.Signer{}}
}

// refresh reads cacerts and reports whether what it holds changed.
func (c *istioCA) refresh(ctx context.Context) bool {
	st := &relayv1.IstioCAStatus{}
	var sec corev1.Secret
	err := c.opts.Cache.Get(ctx, c.opts.Secret, &sec)
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		c.opts.Log.Error(err, "failed to read the Istio CA secret", "secret", c.opts.Secret.String())
		return false
	default:
		m, _ := relaysecret.Decode(relaysecret.IstioCA, sec.Data, "")
		if m.Cert != nil {
			st.NotBefore, st.NotAfter = m.Cert.NotBefore.Unix(), m.Cert.NotAfter.Unix()
		}
		if len(m.Roots) > 0 {
			st.RootSha256 = pki.Fingerprint(m.Roots[0])
		}
		st.Policy = sec.Annotations[meshv1alpha1.RootTrustPolicyKey]
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	changed := c.state == nil || c.state.NotAfter != st.NotAfter || c.state.RootSha256 != st.RootSha256 || c.state.Policy != st.Policy
	c.state = st
	if changed && st.NotAfter > 0 {
		c.opts.Expiry.Set(float64(st.NotAfter))
	}
	return changed
}

// status is what to report: cacerts as last read, with the last failure.
func (c *istioCA) status() *relayv1.IstioCAStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state == nil {
		return nil
	}
	st := &relayv1.IstioCAStatus{
		Policy: c.state.Policy, NotBefore: c.state.NotBefore, NotAfter: c.state.NotAfter, RootSha256: c.state.RootSha256,
	}
	if c.failure != "" {
		st.Policy, st.Error = c.failedPolicy, c.failure
	}
	return st
}

func (c *istioCA) fail(policy string, err error) {
	c.mu.Lock()
	c.failure, c.failedPolicy = err.Error(), policy
	c.mu.Unlock()
	c.opts.Failures.Inc()
	c.opts.Log.Error(err, "failed to install an Istio intermediate CA", "policy", policy, "secret", c.opts.Secret.String())
	c.opts.StatusChanged()
}
