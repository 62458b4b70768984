package server

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"time"

	grpccreds "google.golang.org/grpc/credentials"

	"github.com/meshrelay/meshrelay/pkg/pki"
)

// clientIssuers are the CAs relay-server admits client certificates from.
// A chain that verifies to the relay root is not enough: every CA under
// that root could otherwise issue a certificate for any cluster, and some
// setups keep such a CA's key on workload clusters (Istio's cacerts in the
// two-intermediates architecture). The client certificate's direct issuer
// must be one of these. A value is never changed once stored.
type clientIssuers struct {
	// signing is the signing CA of relay-tls-signing-secret, and previous
	// the one it replaced (while the CA is enabled), so that agents holding
	// a certificate from the previous one can still renew after the
	// secret changes once.
	signing, previous *x509.Certificate
	// named are the CAs of clientIssuerSecret that chain to the relay root.
	named []*x509.Certificate
	// none says why no CA is admitted, when none is.
	none error
	// roots are the relay roots loaded with them: a chain checked on an
	// open connection must still end at one of these.
	roots []*x509.Certificate
}

// all are the admitted CAs.
func (ci *clientIssuers) all() []*x509.Certificate {
	var out []*x509.Certificate
	for _, c := range append([]*x509.Certificate{ci.signing, ci.previous}, ci.named...) {
		if c != nil {
			out = append(out, c)
		}
	}
	return out
}

// describe names the admitted CAs for an error.
func (ci *clientIssuers) describe() string {
	var names []string
	for _, c := range ci.all() {
		names = append(names, pki.CAName(c))
	}
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}

// checkClientIssuer admits a verified client certificate only when its
// direct issuer is one of the CAs the server admits client certificates
// from: the current or previous signing CA, or a CA of clientIssuerSecret;
// and when its chain ends at a relay root the keyring holds. The issuer
// in a verified chain is the certificate whose key checked the leaf's
// signature, so comparing it by subject and public key is enough. The
// handshake calls it, and so do Renew, every stream opening and the
// eviction of open streams after the admitted CAs change (admitIssuer),
// with the chains verified at the connection's handshake. It only returns
// the refusal: each caller logs it.
func (c *keyring) checkClientIssuer(chains [][]*x509.Certificate) error {
	ci := c.clientIssuers.Load()
	if ci == nil {
		return errors.New("relay-server has not loaded the CAs it admits client certificates from yet")
	}
	if ci.none != nil {
		return ci.none
	}
	admitted := ci.all()
	var found, unrooted *x509.Certificate
	for _, chain := range chains {
		if len(chain) < 2 {
			continue
		}
		if !pki.ContainsCA(admitted, chain[1]) {
			found = chain[1]
			continue
		}
		if root := chain[len(chain)-1]; !pki.ContainsCA(ci.roots, root) {
			unrooted = root
			continue
		}
		return nil
	}
	leaf := chains[0][0]
	if unrooted != nil {
		return fmt.Errorf("client certificate %q chains to %s, which is no longer a relay root: "+
			"it must chain to a root in the ca.crt of secret %s",
			leaf.Subject.CommonName, pki.CAName(unrooted), c.cfg.RootTLSSecret.NamespacedName(c.cfg.Namespace))
	}
	return fmt.Errorf("client certificate %q was issued by %s, not by a CA relay-server admits client certificates from (%s): "+
		"it must come from relay-server's signing CA, or from a CA listed in the ca.crt of the secret named by clientIssuerSecret",
		leaf.Subject.CommonName, pki.CAName(found), ci.describe())
}

// chainsOf returns the chains the TLS handshake of the call's connection
// verified, or nil without TLS.
func chainsOf(ctx context.Context) [][]*x509.Certificate {
	info, ok := authInfo(ctx).(grpccreds.TLSInfo)
	if !ok {
		return nil
	}
	return info.State.VerifiedChains
}

// buildClientIssuers makes the admitted set from what load decoded: the
// signing CA (and the one before it), and the named CAs that chain to the
// relay roots at now. It also returns a problem for each named CA left out.
func (c *keyring) buildClientIssuers(roots []*x509.Certificate, now time.Time) (*clientIssuers, []error) {
	ci := &clientIssuers{roots: roots}
	if !c.cfg.DisableCa {
		ci.signing, ci.previous = c.signingCA, c.previousSigningCA
	}
	var errs []error
	if c.cfg.ClientIssuerSecret != "" {
		key := c.clientIssuerKey()
		for _, ca := range c.namedCAs {
			if _, err := pki.VerifyChain(ca, c.namedCAs, roots, pki.RoleSigningCA, now); err != nil {
				errs = append(errs, fmt.Errorf("secret %s: ca.crt: %s is not admitted as a client certificate issuer: %w; list only CAs under the relay root of secret %s",
					key, pki.CAName(ca), err, c.cfg.RootTLSSecret.NamespacedName(c.cfg.Namespace)))
				continue
			}
			ci.named = append(ci.named, ca)
		}
	}
	if len(ci.all()) == 0 {
		ci.none = c.noClientIssuer()
	}
	return ci, errs
}

// noClientIssuer says why relay-server admits no client certificate at
// all, and what to set.
func (c *keyring) noClientIssuer() error {
	switch {
	case c.cfg.DisableCa && c.cfg.ClientIssuerSecret == "":
		return errors.New("relay-server admits no client certificates: disableCa is set and clientIssuerSecret is not; " +
			"set clientIssuerSecret (--client-issuer-secret) to a secret whose ca.crt lists the CA that issues the agents' certificates")
	case c.cfg.ClientIssuerSecret != "" && c.cfg.DisableCa:
		return fmt.Errorf("relay-server admits no client certificates: secret %s (clientIssuerSecret) has no usable CA in ca.crt", c.clientIssuerKey())
	default:
		return fmt.Errorf("relay-server admits no client certificates: no signing CA loaded from secret %s", c.cfg.SigningTLSSecret.NamespacedName(c.cfg.Namespace))
	}
}

// admitsClients returns why no client certificate can be admitted, or nil.
func (c *keyring) admitsClients() error {
	ci := c.clientIssuers.Load()
	if ci == nil {
		return errors.New("the CAs relay-server admits client certificates from are not loaded yet")
	}
	return ci.none
}
