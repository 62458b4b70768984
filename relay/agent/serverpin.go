package agent

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/meshrelay/meshrelay/pkg/pki"
)

// serverPin checks, on every handshake, which CA issued the relay server's
// certificate. Go's TLS client has already verified the chain to the
// pinned roots, the serverAuth usage and that a DNS name covers the
// authority; that is not enough when a CA under the relay root keeps its
// key on a workload cluster (Istio's cacerts in the two-intermediates
// architecture): such a cluster could otherwise serve as the relay server
// to every agent. So, once the agent has a client certificate, the server
// certificate's direct issuer must be either
//   - the CA that issued that client certificate: the relay's signing CA
//     (relayctl gen, a cert-manager or Vault issuer), which also signs the
//     server certificate; or
//   - one of the pinned roots itself: relay-server signs its own serving
//     certificate with the root when it generates its CA.
//
// Before its first client certificate (bootstrap with the identity token)
// the agent knows no issuer but the roots, and only the roots pin.
type serverPin struct {
	roots    []*x509.Certificate
	provider *Provider
}

// verify is a tls.Config.VerifyConnection: it runs after the chain, usage
// and name checks, on resumed sessions too, and before the agent sends its
// client certificate.
func (p serverPin) verify(cs tls.ConnectionState) error {
	if p.provider == nil {
		return nil
	}
	own := p.provider.Current()
	if own == nil || own.Leaf == nil {
		return nil
	}
	expected, err := clientIssuer(own, p.roots)
	if err != nil {
		return fmt.Errorf("cannot pin the relay server's issuer: %w", err)
	}
	if len(cs.VerifiedChains) == 0 {
		return errors.New("relay server certificate did not verify")
	}
	var found *x509.Certificate
	for _, chain := range cs.VerifiedChains {
		if len(chain) < 2 {
			continue
		}
		issuer := chain[1]
		if pki.SameCA(issuer, expected) || pki.ContainsCA(p.roots, issuer) {
			return nil
		}
		found = issuer
	}
	return fmt.Errorf("relay server certificate %q was issued by %s, but this agent expects the CA that issued its own client certificate, %s, or the relay root itself: "+
		"a certificate from another CA under the relay root (such as an Istio CA on a workload cluster) is refused; issue the server certificate from the relay's signing CA",
		cs.PeerCertificates[0].Subject.CommonName, pki.CAName(found), pki.CAName(expected))
}

// clientIssuer returns the CA that issued the agent's client certificate:
// one of the certificates after it in tls.crt, or a root.
func clientIssuer(own *tls.Certificate, roots []*x509.Certificate) (*x509.Certificate, error) {
	var candidates []*x509.Certificate
	for _, der := range own.Certificate[1:] {
		if c, err := x509.ParseCertificate(der); err == nil {
			candidates = append(candidates, c)
		}
	}
	return pki.DirectIssuer(own.Leaf, append(candidates, roots...))
}
