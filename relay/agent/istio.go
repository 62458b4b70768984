package agent

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"slices"
	"sync"
	"time"

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
	// Push queues a CSR for the server (the Connect or push stream).
	Push chan<- *relayv1.PushMessage
	// StatusChanged asks for a fresh status for the server.
	StatusChanged func()
	// Expiry is set to cacerts' NotAfter, RootExpiry to the NotAfter of
	// each root of root-cert.pem (by fingerprint; nil for none); Failures
	// counts failures.
	Expiry     prometheus.Gauge
	RootExpiry *prometheus.GaugeVec
	Failures   prometheus.Counter
	Clock      clock.PassiveClock
	Log        logr.Logger
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
	var roots []*x509.Certificate
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
		for _, r := range m.Roots[:min(len(m.Roots), maxRootCerts)] {
			st.RootCertSha256 = append(st.RootCertSha256, pki.Fingerprint(r))
		}
		st.Policy = sec.Annotations[meshv1alpha1.RootTrustPolicyKey]
		roots = m.Roots
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	changed := c.state == nil || c.state.NotAfter != st.NotAfter || c.state.RootSha256 != st.RootSha256 || c.state.Policy != st.Policy ||
		!slices.Equal(c.state.RootCertSha256, st.RootCertSha256)
	c.state = st
	if changed && st.NotAfter > 0 {
		c.opts.Expiry.Set(float64(st.NotAfter))
	}
	if changed && c.opts.RootExpiry != nil {
		c.opts.RootExpiry.Reset()
		for _, r := range roots {
			c.opts.RootExpiry.WithLabelValues(pki.Fingerprint(r)).Set(float64(r.NotAfter.Unix()))
		}
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
		RootCertSha256: slices.Clone(c.state.RootCertSha256),
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

// maxRootCerts bounds the roots root-cert.pem holds and the agent reports:
// a root change's overlap keeps the replaced roots beside the new one.
const maxRootCerts = 8

// rootCerts returns root-cert.pem for an intermediate under root: root,
// then the roots of held (root-cert.pem as cacerts holds it) whose
// fingerprints are in previous, the roots the server says workloads may
// still hold certificates under; at most maxRootCerts in all.
func rootCerts(root *x509.Certificate, held []*x509.Certificate, previous []string) []*x509.Certificate {
	out := []*x509.Certificate{root}
	for _, h := range held {
		if len(out) == maxRootCerts {
			break
		}
		if slices.Contains(previous, pki.Fingerprint(h)) && !slices.ContainsFunc(out, h.Equal) {
			out = append(out, h)
		}
	}
	return out
}

// heldRoots returns the roots of root-cert.pem in cacerts as the API
// server has it; none when cacerts is absent or was not written under
// policy.
func (c *istioCA) heldRoots(ctx context.Context, policy string) ([]*x509.Certificate, error) {
	var sec corev1.Secret
	err := c.opts.API.Get(ctx, c.opts.Secret, &sec)
	switch {
	case apierrors.IsNotFound(err):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("failed to read secret %s: %w", c.opts.Secret, err)
	case sec.Annotations[meshv1alpha1.RootTrustPolicyKey] != policy:
		return nil, nil
	}
	m, _ := relaysecret.Decode(relaysecret.IstioCA, sec.Data, "")
	return m.Roots, nil
}

// rewriteRoots answers an IntermediateIssued without a chain: it rewrites
// root-cert.pem in cacerts as rootCerts says, keeping the intermediate,
// when cacerts was written under the message's policy and its
// intermediate chains to the message's root; the end of a root change's
// overlap drops the roots the policy no longer trusts so. It then restarts
// Istio's pods once when the server asks. Only the leader writes.
func (c *istioCA) rewriteRoots(ctx context.Context, in *relayv1.IntermediateIssued, now time.Time) error {
	policy := in.GetPolicy()
	log := c.opts.Log.WithValues("policy", policy, "secret", c.opts.Secret.String())
	if !c.opts.Leading() {
		log.V(1).Info("not the leader: leaving root-cert.pem to it")
		return nil
	}
	roots, err := pki.DecodeCertificates(in.GetRootCertificate())
	if err != nil || len(roots) == 0 {
		return fmt.Errorf("root from the server: %w", err)
	}
	var sec corev1.Secret
	if err := c.opts.API.Get(ctx, c.opts.Secret, &sec); err != nil {
		if apierrors.IsNotFound(err) {
			return nil // nothing to rewrite: the server asks for an intermediate
		}
		return fmt.Errorf("failed to read secret %s: %w", c.opts.Secret, err)
	}
	if sec.Annotations[meshv1alpha1.RootTrustPolicyKey] != policy {
		log.V(1).Info("cacerts was not written under this policy: root-cert.pem left alone")
		return nil
	}
	m, _ := relaysecret.Decode(relaysecret.IstioCA, sec.Data, "")
	if m.Cert == nil {
		return nil
	}
	if _, err := pki.VerifyChain(m.Cert, m.Chain, roots[:1], pki.RoleSigningCA, now); err != nil {
		log.V(1).Info("the intermediate in cacerts does not chain to the policy's root: root-cert.pem left alone until the new intermediate comes", "error", err.Error())
		return nil
	}
	want := rootCerts(roots[0], m.Roots, in.GetPreviousRootSha256())
	pemBytes := pki.EncodeCertificates(want...)
	if bytes.Equal(pemBytes, sec.Data[pki.IstioRootCertKey]) {
		return nil
	}
	var dropped []string
	for _, r := range m.Roots {
		if !slices.ContainsFunc(want, r.Equal) {
			dropped = append(dropped, pki.Fingerprint(r))
		}
	}
	sec.Data[pki.IstioRootCertKey] = pemBytes
	if err := c.opts.Writer.Update(ctx, &sec); err != nil {
		return fmt.Errorf("failed to update secret %s: %w", c.opts.Secret, err)
	}
	c.mu.Lock()
	c.failure, c.failedPolicy = "", ""
	c.mu.Unlock()
	log.Info("rewrote root-cert.pem in cacerts: the roots the policy no longer trusts left", "dropped", dropped, "roots", len(want))
	if in.GetAutoRestartPods() {
		if err := restartIstio(ctx, c.opts.API, c.opts.Writer, c.opts.Secret.Namespace, revision(m.Cert, want), now, c.opts.Log); err != nil {
			return fmt.Errorf("root-cert.pem written, but restarting Istio's pods failed: %w", err)
		}
	}
	return nil
}

// revision names one cacerts content: the first 16 hex digits of the
// intermediate's fingerprint and, when root-cert.pem holds more than the
// intermediate's root, "-" and the first 8 of the SHA-256 of those roots.
func revision(ca *x509.Certificate, roots []*x509.Certificate) string {
	rev := pki.Fingerprint(ca)[:16]
	if len(roots) > 1 {
		var all []byte
		for _, r := range roots {
			all = append(all, r.Raw...)
		}
		sum := sha256.Sum256(all)
		rev += "-" + hex.EncodeToString(sum[:4])
	}
	return rev
}
