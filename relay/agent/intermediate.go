package agent

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	meshv1alpha1 "github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
	"github.com/meshrelay/meshrelay/pkg/pki"
	relayv1 "github.com/meshrelay/meshrelay/relay/api/v1"
)

// onIssue answers the server's IssueIntermediate: on the leader only, so
// that replicas do not each make a key.
func (c *istioCA) onIssue(in *relayv1.IssueIntermediate) {
	policy := in.GetPolicy()
	if !c.opts.Leading() {
		c.opts.Log.V(1).Info("not the leader: leaving the Istio intermediate to it", "policy", policy)
		return
	}
	msg, err := c.request(policy)
	if err != nil {
		c.fail(policy, err)
		return
	}
	select {
	case c.opts.Push <- msg:
		c.opts.Log.Info("sent an Istio intermediate CSR; the key stays in this cluster", "policy", policy)
	default:
		c.opts.Log.Info("push queue full: dropped the Istio intermediate CSR; the server asks again", "policy", policy)
	}
}

// onIssued installs a signed intermediate, or without one rewrites
// root-cert.pem (rewriteRoots).
func (c *istioCA) onIssued(ctx context.Context, in *relayv1.IntermediateIssued) {
	install := c.install
	if len(in.GetCertificateChain()) == 0 {
		install = c.rewriteRoots
	}
	if err := install(ctx, in, c.opts.Clock.Now()); err != nil {
		c.fail(in.GetPolicy(), err)
		return
	}
	c.opts.StatusChanged() // a failure reported before is cleared
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
// this replica is holding (another replica's is ignored), with
// root-cert.pem as rootCerts says (during a root change's overlap it keeps
// the replaced roots), then restarts Istio's pods once when the server
// asks. The watcher reports the new cacerts when its cache sees it.
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
	held, err := c.heldRoots(ctx, in.GetPolicy())
	if err != nil {
		return err
	}
	trusted := rootCerts(chain[len(chain)-1], held, in.GetPreviousRootSha256())
	data[pki.IstioRootCertKey] = pki.EncodeCertificates(trusted...)
	if err := c.write(ctx, in.GetPolicy(), data); err != nil {
		return err
	}
	c.mu.Lock()
	delete(c.pending, in.GetPolicy())
	c.failure, c.failedPolicy = "", ""
	c.mu.Unlock()
	c.opts.Log.Info("installed Istio intermediate CA", "policy", in.GetPolicy(), "secret", c.opts.Secret.String(),
		"serial", chain[0].SerialNumber.Text(16), "notAfter", chain[0].NotAfter)
	if in.GetAutoRestartPods() {
		if err := restartIstio(ctx, c.opts.API, c.opts.Writer, c.opts.Secret.Namespace, revision(chain[0], trusted), now, c.opts.Log); err != nil {
			return fmt.Errorf("cacerts written, but restarting Istio's pods failed: %w", err)
		}
	}
	return nil
}

// write creates or updates cacerts. A cacerts that meshrelay did not write
// (no policy annotation: a plug-in CA someone provided) is never replaced.
func (c *istioCA) write(ctx context.Context, policy string, data map[string][]byte) error {
	var sec corev1.Secret
	err := c.opts.API.Get(ctx, c.opts.Secret, &sec)
	switch {
	case apierrors.IsNotFound(err):
		sec = corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: c.opts.Secret.Namespace, Name: c.opts.Secret.Name, Annotations: map[string]string{meshv1alpha1.RootTrustPolicyKey: policy}},
			Type:       corev1.SecretTypeOpaque,
			Data:       data,
		}
		if err := c.opts.Writer.Create(ctx, &sec); err != nil {
			return fmt.Errorf("failed to create secret %s: %w", c.opts.Secret, err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("failed to read secret %s: %w", c.opts.Secret, err)
	case sec.Annotations[meshv1alpha1.RootTrustPolicyKey] == "":
		return fmt.Errorf("secret %s exists and was not written by meshrelay, so it is left alone: delete it, or annotate it %s=%s to let RootTrustPolicy %s replace it",
			c.opts.Secret, meshv1alpha1.RootTrustPolicyKey, policy, policy)
	}
	if sec.Annotations == nil {
		sec.Annotations = map[string]string{}
	}
	sec.Annotations[meshv1alpha1.RootTrustPolicyKey] = policy
	sec.Data = data
	if err := c.opts.Writer.Update(ctx, &sec); err != nil {
		return fmt.Errorf("failed to update secret %s: %w", c.opts.Secret, err)
	}
	return nil
}
