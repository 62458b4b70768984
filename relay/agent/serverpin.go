package agent

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"sync"

	corev1 "k8s.io/api/core/v1"

	"github.com/meshrelay/meshrelay/pkg/pki"
	"github.com/meshrelay/meshrelay/pkg/relaysecret"
)

// serverPin checks, on every handshake, which CA issued the relay server's
// certificate. serverCheck has already verified the chain to the pinned
// roots, the serverAuth usage and that a DNS name covers the authority, as
// Go's TLS client would; that is not enough when a CA under the relay root keeps its
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
// The bootstrap connection pins the same way, without presenting the
// certificate, when the client secret still holds one (valid, revoked,
// issued to an earlier registration, or expired): see bootstrapPin. Before
// its first client certificate the agent knows no issuer but the roots, and
// only the roots pin.
//
// The roots are the agent's trust anchors at each handshake, so that a
// root that joins them (a root rotation) counts at once.
type serverPin struct {
	roots func() []*x509.Certificate
	// own returns the client certificate whose issuer pins; a nil
	// certificate pins the roots only. A nil func pins issuer, fixed when
	// the pin is made (Bootstrap).
	own func() *tls.Certificate
	// whose names the certificate whose issuer pins in a refusal ("its own
	// client certificate").
	whose string
	// fix, when not empty, ends a refusal with what to do when the relay's
	// signing CA was legitimately replaced.
	fix string

	mu sync.Mutex
	// leaf is own's certificate, and for the roots, that issuer (or
	// issuerErr) was worked out for, so that a handshake does not parse
	// and check its chain again until the provider holds another
	// certificate or the roots change.
	leaf      *x509.Certificate
	forRoots  []*x509.Certificate
	issuer    *x509.Certificate
	issuerErr error
}

// providerPin pins to the certificate the provider presents, which
// clientSecret (namespace/name) holds.
func providerPin(roots func() []*x509.Certificate, p *Provider, clientSecret string) *serverPin {
	return &serverPin{roots: roots, own: p.Current, whose: "its own client certificate", fix: replacedCAFix(clientSecret)}
}

// expected returns the CA the server certificate's issuer must be when it
// is not a root; nil when the roots only pin.
func (p *serverPin) expected() (*x509.Certificate, error) {
	if p.own == nil {
		return p.issuer, nil
	}
	own := p.own()
	if own == nil || own.Leaf == nil {
		return nil, nil
	}
	roots := p.roots()
	p.mu.Lock()
	defer p.mu.Unlock()
	if own.Leaf != p.leaf || !slices.Equal(roots, p.forRoots) {
		p.leaf, p.forRoots = own.Leaf, roots
		p.issuer, p.issuerErr = clientIssuer(own, roots)
	}
	return p.issuer, p.issuerErr
}

// replacedCAFix says how an agent gets past a pin whose issuer the relay
// no longer uses: without the client secret, Bootstrap pins the roots only.
func replacedCAFix(clientSecret string) string {
	return fmt.Sprintf("; if the relay's signing CA was replaced, delete secret %s and the agent bootstraps pinning the relay root only", clientSecret)
}

// check runs after the chain (chains, from leaf, the server's
// certificate, to the roots), usage and name checks, on resumed sessions
// too, and before the agent sends its client certificate.
func (p *serverPin) check(leaf *x509.Certificate, chains [][]*x509.Certificate) error {
	expected, err := p.expected()
	if err != nil {
		return fmt.Errorf("cannot pin the relay server's issuer: %w", err)
	}
	if expected == nil {
		return nil
	}
	if len(chains) == 0 {
		return errors.New("relay server certificate did not verify")
	}
	roots := p.roots()
	var found *x509.Certificate
	for _, chain := range chains {
		if len(chain) < 2 {
			continue
		}
		issuer := chain[1]
		if pki.SameCA(issuer, expected) || pki.ContainsCA(roots, issuer) {
			return nil
		}
		found = issuer
	}
	return fmt.Errorf("relay server certificate %q was issued by %s, but this agent expects the CA that issued %s, %s, or the relay root itself: "+
		"a certificate from another CA under the relay root (such as an Istio CA on a workload cluster) is refused; issue the server certificate from the relay's signing CA%s",
		leaf.Subject.CommonName, pki.CAName(found), p.whose, pki.CAName(expected), p.fix)
}

// clientIssuer returns the CA that issued the agent's client certificate:
// one of the certificates after it in tls.crt, or a root.
func clientIssuer(own *tls.Certificate, roots []*x509.Certificate) (*x509.Certificate, error) {
	m := &relaysecret.Material{Cert: own.Leaf}
	for _, der := range own.Certificate[1:] {
		if c, err := x509.ParseCertificate(der); err == nil {
			m.Chain = append(m.Chain, c)
		}
	}
	return m.Issuer(roots...)
}

// bootstrapPin returns the pin of a Bootstrap connection from the client
// secret sec the agent holds (nil when there is none), and the issuer it
// pins to. The certificate in tls.crt pins whether it is valid, revoked,
// issued to an earlier registration or expired: the agent knows which CA
// issued it, so a server certificate from another CA under the roots is
// refused as it is on the mutual TLS connections. The certificate is not
// presented. A tls.crt that does not decode, or whose issuer is neither
// after it nor among the roots (the roots changed), pins the roots only,
// and the issuer returned is nil. roots are the trust anchors, read at
// each handshake.
func bootstrapPin(sec *corev1.Secret, roots func() []*x509.Certificate) (*serverPin, *x509.Certificate) {
	if sec == nil {
		return nil, nil
	}
	certs, err := pki.DecodeCertificates(sec.Data[relaysecret.KeyTLSCert])
	if err != nil || len(certs) == 0 {
		return nil, nil
	}
	prev := &relaysecret.Material{Cert: certs[0], Chain: certs[1:]}
	issuer, err := prev.Issuer(roots()...)
	if err != nil {
		return nil, nil
	}
	name := fmt.Sprintf("%s/%s", sec.Namespace, sec.Name)
	return &serverPin{
		roots:  roots,
		issuer: issuer,
		whose:  fmt.Sprintf("its previous client certificate (secret %s)", name),
		fix:    replacedCAFix(name),
	}, issuer
}
