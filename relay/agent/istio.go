package agent

import (
	"context"
	"crypto"
	"crypto/x509"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshrelay/meshrelay/pkg/pki"
	relayv1 "github.com/meshrelay/meshrelay/relay/api/v1"
)

// policyAnnotation on istio-system/cacerts names the RootTrustPolicy that
// issued it; the agent overwrites only a cacerts that carries it.
const policyAnnotation = "meshrelay.dev/root-trust-policy"

// istioCA is the agent's side of federated trust (flow 6): asked by the
// server, it makes the intermediate CA key in this cluster, sends only a
// CSR, and writes what the server signs into istio-system/cacerts. It
// reports what cacerts holds in every status, so that the server knows when
// to renew.
type istioCA struct {
	agent  *Agent
	key    types.NamespacedName
	reader client.Reader
	writer client.Client
	api    client.Reader

	mu sync.Mutex
	// pending are the keys waiting for their signed certificate, by policy.
	pending map[string]crypto.Signer
	// state is what cacerts held when last read, with the last failure.
	state *relayv1.IstioCAStatus
	// failure is the last failure to make the key or install cacerts.
	failure, failedPolicy string
}

// refresh reads cacerts and reports whether what it holds changed.
func (c *istioCA) refresh(ctx context.Context) bool {
	st := &relayv1.IstioCAStatus{}
	var sec corev1.Secret
	err := c.reader.Get(ctx, c.key, &sec)
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		c.agent.log.Info("failed to read the Istio CA secret", "secret", c.key.String(), "error", err.Error())
		return false
	default:
		if ca, err := pki.DecodeCertificate(sec.Data[pki.IstioCACertKey]); err == nil {
			st.NotBefore, st.NotAfter = ca.NotBefore.Unix(), ca.NotAfter.Unix()
		}
		if root, err := pki.DecodeCertificates(sec.Data[pki.IstioRootCertKey]); err == nil {
			st.RootSha256 = pki.Fingerprint(root[0])
		}
		st.Policy = sec.Annotations[policyAnnotation]
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	changed := c.state == nil || c.state.NotAfter != st.NotAfter || c.state.RootSha256 != st.RootSha256 || c.state.Policy != st.Policy
	c.state = st
	if changed && st.NotAfter > 0 {
		c.agent.metrics.istioExpiry.Set(float64(st.NotAfter))
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
	c.agent.metrics.istioFailures.Inc()
	c.agent.log.Info("failed to install an Istio intermediate CA", "policy", policy, "secret", c.key.String(), "error", err.Error())
	c.agent.statusChanged()
}

// request makes a key for policy's intermediate and returns the CSR to send.
// The key stays in this process until the signed certificate comes back; a
// new request replaces it.
func (c *istioCA) request(policy string) (*relayv1.PushMessage, error) {
	key, err := pki.GenerateKey(pki.ECDSAP256)
	if err != nil {
		return nil, err
	}
	csr, err := pki.NewCSR(key, pki.IstiodDNSName)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.pending[policy] = key
	c.mu.Unlock()
	return &relayv1.PushMessage{Message: &relayv1.PushMessage_IntermediateCsr{IntermediateCsr: &relayv1.IntermediateCSR{Policy: policy, Csr: csr}}}, nil
}

// install writes a signed intermediate into cacerts when its key is the one
// this replica is holding (another replica's is ignored), then restarts
// Istio's pods once when the server asks. The watcher reports the new
// cacerts when its cache sees it.
func (c *istioCA) install(ctx context.Context, in *relayv1.IntermediateIssued, now time.Time) error {
	chain, err := pki.DecodeCertificates(in.GetCertificateChain())
	if err != nil {
		return fmt.Errorf("intermediate chain from the server: %w", err)
	}
	c.mu.Lock()
	key := c.pending[in.GetPolicy()]
	c.mu.Unlock()
	if key == nil || pki.KeyMatchesCertificate(key, chain[0]) != nil {
		return nil
	}
	roots, err := pki.DecodeCertificates(in.GetRootCertificate())
	if err != nil {
		return fmt.Errorf("root from the server: %w", err)
	}
	if !chain[len(chain)-1].Equal(roots[0]) {
		chain = append(chain, roots[0])
	}
	data, err := pki.IstioCAData(key, chain, now)
	if err != nil {
		return fmt.Errorf("intermediate from the server: %w", err)
	}
	if err := c.write(ctx, in.GetPolicy(), data); err != nil {
		return err
	}
	c.mu.Lock()
	delete(c.pending, in.GetPolicy())
	c.failure, c.failedPolicy = "", ""
	c.mu.Unlock()
	c.agent.log.Info("installed Istio intermediate CA", "policy", in.GetPolicy(), "secret", c.key.String(),
		"serial", chain[0].SerialNumber.Text(16), "notAfter", chain[0].NotAfter)
	if in.GetAutoRestartPods() {
		if err := restartIstio(ctx, c.api, c.writer, c.key.Namespace, revision(chain[0]), now, c.agent.log); err != nil {
			return fmt.Errorf("cacerts written, but restarting Istio's pods failed: %w", err)
		}
	}
	return nil
}

// write creates or updates cacerts. A cacerts that meshrelay did not write
// (no policy annotation: a plug-in CA someone provided) is never replaced.
func (c *istioCA) write(ctx context.Context, policy string, data map[string][]byte) error {
	var sec corev1.Secret
	err := c.api.Get(ctx, c.key, &sec)
	switch {
	case apierrors.IsNotFound(err):
		sec = corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: c.key.Namespace, Name: c.key.Name, Annotations: map[string]string{policyAnnotation: policy}},
			Type:       corev1.SecretTypeOpaque,
			Data:       data,
		}
		if err := c.writer.Create(ctx, &sec); err != nil {
			return fmt.Errorf("failed to create secret %s: %w", c.key, err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("failed to read secret %s: %w", c.key, err)
	case sec.Annotations[policyAnnotation] == "":
		return fmt.Errorf("secret %s exists and was not written by meshrelay, so it is left alone: delete it, or annotate it %s=%s to let RootTrustPolicy %s replace it",
			c.key, policyAnnotation, policy, policy)
	}
	if sec.Annotations == nil {
		sec.Annotations = map[string]string{}
	}
	sec.Annotations[policyAnnotation] = policy
	sec.Data = data
	if err := c.writer.Update(ctx, &sec); err != nil {
		return fmt.Errorf("failed to update secret %s: %w", c.key, err)
	}
	return nil
}

// handleIssue answers the server's IssueIntermediate: on the leader only, so
// that replicas do not each make a key.
func (a *Agent) handleIssue(in *relayv1.IssueIntermediate) {
	policy := in.GetPolicy()
	if a.istio == nil {
		a.log.Info("the server asked for an Istio intermediate, but federated trust is off in this agent: set --federated-trust and apply manifests/components/istio-federated-trust", "policy", policy)
		return
	}
	if !a.leading.Load() {
		a.log.V(1).Info("not the leader: leaving the Istio intermediate to it", "policy", policy)
		return
	}
	msg, err := a.istio.request(policy)
	if err != nil {
		a.istio.fail(policy, err)
		return
	}
	select {
	case a.pushOut <- msg:
		a.log.Info("sent an Istio intermediate CSR; the key stays in this cluster", "policy", policy)
	default:
		a.log.Info("push queue full: dropped the Istio intermediate CSR; the server asks again", "policy", policy)
	}
}

// handleIssued installs a signed intermediate.
func (a *Agent) handleIssued(ctx context.Context, in *relayv1.IntermediateIssued) {
	if a.istio == nil {
		return
	}
	if err := a.istio.install(ctx, in, a.now()); err != nil {
		a.istio.fail(in.GetPolicy(), err)
		return
	}
	a.statusChanged() // a failure reported before is cleared
}

// revision names one cacerts content: the first 16 hex digits of the
// intermediate's fingerprint.
func revision(ca *x509.Certificate) string { return pki.Fingerprint(ca)[:16] }
