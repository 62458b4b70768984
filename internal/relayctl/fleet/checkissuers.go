package fleet

import (
	"context"
	"crypto/x509"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/meshrelay/meshrelay/pkg/pki"
	"github.com/meshrelay/meshrelay/pkg/relaysecret"
)

// clientIssuers records the CAs relay-server admits client certificates
// from, as the management cluster shows them: its signing CA (signing,
// when the CA is on and the secret is valid) and the CAs of
// clientIssuerSecret that chain to the relay root. With neither, nothing
// can connect, which is a problem.
func (c *checker) clientIssuers(ctx context.Context, side string, signing *x509.Certificate) error {
	srv := c.o.Server
	c.issuers = nil
	if signing != nil {
		c.issuers = append(append(c.issuers, signing), c.previous...)
	}
	const check = "client issuers"
	if srv.ClientIssuerSecret != "" {
		key := types.NamespacedName{Namespace: srv.Namespace, Name: srv.ClientIssuerSecret}
		s, err := lookupSecret(ctx, c.o.Mgmt, key, side)
		if err != nil {
			return err
		}
		if s == nil {
			c.add(side, check, Problem, "secret %s (clientIssuerSecret) not found: create it with the PEM certificate of each CA that issues client certificates in ca.crt", key)
		} else {
			c.namedIssuers(side, key, s)
		}
		c.issuersKnown = true
	} else {
		c.issuersKnown = signing != nil
	}
	switch {
	case len(c.issuers) > 0:
		var names []string
		for _, ca := range c.issuers {
			names = append(names, pki.CAName(ca))
		}
		c.add(side, check, OK, "relay-server admits client certificates from %s", strings.Join(names, ", "))
	case srv.ClientIssuerSecret == "" && signing == nil:
		c.add(side, check, Warning, "no signing CA: relay-server (with disableCa) admits client certificates only from the CAs its clientIssuerSecret lists, and none at all without it; "+
			"pass --client-issuer-secret with the secret relay-server names so that check can judge them")
	default:
		c.add(side, check, Problem, "relay-server admits no client certificate: no signing CA and no usable CA in secret %s/%s (clientIssuerSecret)", srv.Namespace, srv.ClientIssuerSecret)
	}
	return nil
}

// namedIssuers adds the CAs of clientIssuerSecret s that chain to the
// relay root, and a problem for each that does not.
func (c *checker) namedIssuers(side string, key types.NamespacedName, s *corev1.Secret) {
	check := "secret " + key.String()
	certs, err := pki.DecodeCertificates(s.Data[relaysecret.KeyCACert])
	if err != nil {
		c.add(side, check, Problem, "ca.crt: %v: put the PEM certificate of each CA that issues client certificates in ca.crt", err)
		return
	}
	for _, ca := range certs {
		if _, err := pki.VerifyChain(ca, certs, c.roots, pki.RoleSigningCA, c.o.Now); err != nil {
			c.add(side, check, Problem, "ca.crt: %s is not admitted by relay-server: %v; list only CAs under the relay root of %s", pki.CAName(ca), err, c.o.Server.RootTLSSecret.Name)
			continue
		}
		c.issuers = append(c.issuers, ca)
	}
}

// ownCert is the certificate a workload cluster's client secret holds,
// valid or not, and the CA that issued it, worked out once per cluster.
type ownCert struct {
	cert *x509.Certificate
	// issuer is nil when issuerErr says why it is not known.
	issuer    *x509.Certificate
	issuerErr error
}

// readOwnCert decodes the client secret sec (nil when there is none) and
// finds the issuer of its certificate in its tls.crt, its ca.crt or roots,
// the management cluster's.
func readOwnCert(sec *corev1.Secret, roots []*x509.Certificate) ownCert {
	if sec == nil {
		return ownCert{}
	}
	m, _ := relaysecret.Decode(relaysecret.Client, sec.Data, "")
	if m.Cert == nil {
		return ownCert{}
	}
	o := ownCert{cert: m.Cert}
	o.issuer, o.issuerErr = m.Issuer(roots...)
	return o
}

// clientIssuerAdmitted checks that relay-server admits the issuer of a
// workload cluster's valid client certificate own, when check knows what
// it admits.
func (c *checker) clientIssuerAdmitted(cluster string, key types.NamespacedName, own ownCert) {
	if !c.issuersKnown {
		return
	}
	if own.issuerErr != nil {
		c.add(cluster, "client issuer", Problem, "secret %s: %v", key, own.issuerErr)
		return
	}
	issuer := own.issuer
	if pki.ContainsCA(c.issuers, issuer) {
		c.add(cluster, "client issuer", OK, "secret %s was issued by %s, which relay-server admits", key, pki.CAName(issuer))
		return
	}
	c.add(cluster, "client issuer", Problem, "secret %s was issued by %s, which relay-server does not admit client certificates from "+
		"(unless a replica still holds it in memory as the signing CA before its last change): reissue it from relay-server's signing CA (delete the secret so that the agent bootstraps again), "+
		"or list the CA in relay-server's clientIssuerSecret", key, pki.CAName(issuer))
}

// workloadCAKeys warns when a workload cluster holds the key of a CA under
// the relay root (relaysecret.CAKeyExposure): in relay-root-tls-secret,
// Istio's cacerts, or the cert-manager CA Issuer secret of the overlays.
// A secret check may not read is skipped.
func (c *checker) workloadCAKeys(ctx context.Context, cluster string, rm Remote, own *x509.Certificate) {
	if len(c.roots) == 0 {
		return
	}
	ag := c.o.Agent
	for _, s := range []struct {
		key  types.NamespacedName
		kind relaysecret.Kind
	}{
		{ag.RootTLSSecret.NamespacedName(ag.Namespace), relaysecret.Root},
		{ag.IstioCASecret.NamespacedName(ag.Namespace), relaysecret.IstioCA},
		{types.NamespacedName{Namespace: ag.Namespace, Name: CertManagerIssuerSecret}, relaysecret.Signing},
	} {
		sec, err := lookupSecret(ctx, rm.Client, s.key, "workload cluster "+rm.Context)
		if err != nil || sec == nil {
			continue
		}
		// A CA Issuer's secret often has no ca.crt: what decoded is enough.
		m, _ := relaysecret.Decode(s.kind, sec.Data, "")
		if m == nil || m.Cert == nil || m.Key == nil {
			continue
		}
		// A CA relay-server admits client certificates from, or the one
		// that issued this cluster's, issues client certificates as the
		// signing CA does.
		issuer := c.signing
		if pki.ContainsCA(c.issuers, m.Cert) || pki.SameCA(m.Cert, own) {
			issuer = m.Cert
		}
		if what := relaysecret.CAKeyExposure(m, c.roots, issuer, c.o.Now); what != "" {
			c.add(cluster, "secret "+s.key.String(), Warning, "%s", what)
		}
	}
}

// CertManagerIssuerSecret is the secret of the cert-manager overlays' CA
// Issuer (relay-issuer), which holds a CA key on every cluster.
const CertManagerIssuerSecret = "relay-issuer-ca"

// issuerCheckFields are the checker's fields for client issuers.
type issuerCheckFields struct {
	// issuers are the CAs relay-server admits client certificates from, as
	// far as check can tell; issuersKnown says whether that is all of them.
	issuers      []*x509.Certificate
	issuersKnown bool
	// signing is the signing CA of the management cluster, when valid;
	// previous the CAs of its previous.crt that still chain to the relay
	// roots: relay-server admits their certificates until agents renew.
	signing  *x509.Certificate
	previous []*x509.Certificate
}
