package webhook

import (
	"context"
	"crypto/x509"

	corev1 "k8s.io/api/core/v1"

	"github.com/meshrelay/meshrelay/pkg/relaysecret"
)

// warnCAKey warns, without denying, when a workload cluster's
// relay-root-tls-secret or Istio cacerts carries the key of a CA under the
// relay root, saying what that key allows (relaysecret.CAKeyExposure). The
// management cluster keeps the relay's CA keys by design and gets no
// warning. m is the admitted material of sec.
func (s *secrets) warnCAKey(ctx context.Context, p *problems, kind relaysecret.Kind, sec *corev1.Secret, m *relaysecret.Material) error {
	if s.cfg.Cluster == "" || m == nil || m.Key == nil || (kind != relaysecret.Root && kind != relaysecret.IstioCA) {
		return nil
	}
	roots := m.Roots
	if kind == relaysecret.IstioCA {
		var err error
		if roots, err = s.otherRoots(ctx); err != nil || roots == nil {
			return err
		}
	}
	issuer, err := s.clientIssuer(ctx, roots)
	if err != nil {
		return err
	}
	if what := relaysecret.CAKeyExposure(m, roots, issuer, s.now()); what != "" {
		p.warn("%s/%s on workload cluster %s %s", sec.Namespace, sec.Name, s.cfg.Cluster, what)
	}
	return nil
}

// clientIssuer returns the CA that issued this cluster's relay client
// certificate, found in its tls.crt, its ca.crt or roots; nil when there
// is none to read or its issuer is not among them.
func (s *secrets) clientIssuer(ctx context.Context, roots []*x509.Certificate) (*x509.Certificate, error) {
	sec, err := s.get(ctx, s.names().Client)
	if err != nil || sec == nil {
		return nil, err
	}
	m, _ := relaysecret.Decode(relaysecret.Client, sec.Data, "")
	if m.Cert == nil {
		return nil, nil
	}
	issuer, _ := m.Issuer(roots...)
	return issuer, nil
}
