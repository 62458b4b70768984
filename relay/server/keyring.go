package server

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/pkg/pki"
	"github.com/meshrelay/meshrelay/pkg/relaysecret"
)

// keyring is the server's live certificate material: its serving
// certificate, the relay roots that verify clients, the CAs whose client
// certificates it admits, the issuer that signs CSRs and the identity
// token. load replaces each piece when its secret changes; a secret that
// fails to decode is logged and the previous piece kept, so a bad edit
// never takes the server down. The identity token is the exception: it is
// a credential, so a token secret that is deleted or broken turns the
// shared token off. New handshakes and signatures use whatever
// is current; established connections are not touched.
type keyring struct {
	cfg     *config.Server
	metrics *metrics

	server atomic.Pointer[tls.Certificate]
	// roots are the relay roots, relay-root-tls-secret's ca.crt and
	// nothing else: the only anchors client chains verify to.
	roots atomic.Pointer[x509.CertPool]
	// rootPEM is the trust bundle pushed to agents: the same relay roots,
	// and only while they verify the serving certificate, so that an agent
	// that takes the bundle still verifies the server; nil otherwise.
	rootPEM atomic.Pointer[[]byte]
	// clientIssuers are the CAs a client certificate's direct issuer must
	// be one of (issuerpin.go).
	clientIssuers atomic.Pointer[clientIssuers]
	issuer        atomic.Pointer[pki.Issuer]
	token         atomic.Pointer[[]byte]
	// serving is the TLS configuration built from the current server and
	// roots, shared by every handshake until either changes: a
	// connection keeps its configuration for its whole life.
	serving atomic.Pointer[servingConfig]
	// admitHandshake, when set, decides whether a verified client
	// certificate may still act for its cluster (revocation, binding).
	admitHandshake func(cluster string, cert *x509.Certificate) error
	// onBundle, when set, is called with the trust bundle whenever it
	// changes, under the keyring's lock: it must not block.
	onBundle func(bundle []byte)
	// log and refusals, when set, record the client certificates refused
	// at the handshake, at a bounded rate (verifyClient).
	log      logr.Logger
	refusals *limitedLog

	// mu serialises load; seen remembers what each secret's last decoded
	// version gave, so that a change to one secret decodes only that one.
	mu   sync.Mutex
	seen map[types.NamespacedName]loadedSecret
	// rootCerts are the relay roots last loaded; signingCA and
	// previousSigningCA the current signing CA and the one it replaced;
	// namedCAs the certificates of clientIssuerSecret's ca.crt.
	rootCerts                    []*x509.Certificate
	signingCA, previousSigningCA *x509.Certificate
	namedCAs                     []*x509.Certificate
}

// loadedSecret is what one version of a secret gave: the roots it
// contributes to client verification and its problem, if any.
type loadedSecret struct {
	resourceVersion string
	roots           []*x509.Certificate
	err             error
}

// secretLoader is one secret the keyring comes from, with the function that
// decodes it, stores what it provides, and returns the roots it adds.
type secretLoader struct {
	key    types.NamespacedName
	decode func(*corev1.Secret, time.Time) ([]*x509.Certificate, error)
}

// newKeyring returns an empty keyring for the secrets cfg names; load fills it.
func newKeyring(cfg *config.Server, m *metrics) *keyring {
	return &keyring{cfg: cfg, metrics: m, seen: map[types.NamespacedName]loadedSecret{}}
}

// loaders are the secrets the keyring reads, each with its loader; the
// signing secret only while the CA is enabled, clientIssuerSecret when
// set.
func (c *keyring) loaders() []secretLoader {
	ns := c.cfg.Namespace
	loaders := []secretLoader{
		{c.cfg.RootTLSSecret.NamespacedName(ns), c.loadRoot},
		{c.cfg.TLSSecret.NamespacedName(ns), c.loadServer},
		{c.cfg.TokenSecret.NamespacedName(ns), c.loadToken},
	}
	// In insecure mode the issuer is an in-memory CA (useInsecureCA): the
	// signing secret is never read.
	if !c.cfg.DisableCa && !c.cfg.Insecure {
		loaders = append(loaders, secretLoader{c.cfg.SigningTLSSecret.NamespacedName(ns), c.loadSigning})
	}
	if c.cfg.ClientIssuerSecret != "" {
		loaders = append(loaders, secretLoader{c.clientIssuerKey(), c.loadClientIssuers})
	}
	return loaders
}

// clientIssuerKey names the clientIssuerSecret, in the server's namespace.
func (c *keyring) clientIssuerKey() types.NamespacedName {
	return types.NamespacedName{Namespace: c.cfg.Namespace, Name: c.cfg.ClientIssuerSecret}
}

// secretKeys are the secrets load reads.
func (c *keyring) secretKeys() []types.NamespacedName {
	var keys []types.NamespacedName
	for _, p := range c.loaders() {
		keys = append(keys, p.key)
	}
	return keys
}

// load reads every secret, decodes those whose version changed since the
// last load, and rebuilds the client roots (the relay roots alone), the
// trust bundle and the admitted client issuers. It returns what is missing
// or broken, for readiness and the log.
func (c *keyring) load(ctx context.Context, r client.Reader, now time.Time, log logr.Logger) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var errs []error
	var roots []*x509.Certificate
	for _, p := range c.loaders() {
		var s corev1.Secret
		if err := r.Get(ctx, p.key, &s); err != nil {
			delete(c.seen, p.key)
			if p.key == c.clientIssuerKey() {
				// An allow list that is gone admits nothing.
				c.namedCAs = nil
			}
			switch {
			case apierrors.IsNotFound(err) && p.key == c.tokenKey():
				// A deleted token is a revoked credential: the shared
				// token is refused from now on, not at the next restart.
				c.token.Store(nil)
				errs = append(errs, fmt.Errorf("secret %s is missing, so the shared identity token is refused; that is intended once every cluster has its own token", p.key))
			case apierrors.IsNotFound(err):
				errs = append(errs, fmt.Errorf("secret %s is missing", p.key))
			default:
				errs = append(errs, fmt.Errorf("failed to get secret %s: %w", p.key, err))
			}
			continue
		}
		d, ok := c.seen[p.key]
		// A secret that failed is decoded again: what it lacked may have
		// come since (a server secret without ca.crt needs the root).
		if !ok || d.resourceVersion != s.ResourceVersion || d.err != nil {
			d.roots, d.err = p.decode(&s, now)
			d.resourceVersion = s.ResourceVersion
			c.seen[p.key] = d
		}
		roots = append(roots, d.roots...)
		if d.err != nil {
			errs = append(errs, d.err)
		}
	}
	if len(roots) > 0 {
		c.rootCerts = dedupe(roots)
		pool := x509.NewCertPool()
		for _, r := range c.rootCerts {
			pool.AddCert(r)
		}
		c.roots.Store(pool)
	}
	if err := c.storeBundle(now); err != nil {
		errs = append(errs, err)
	}
	ci, problems := c.buildClientIssuers(c.rootCerts, now)
	c.clientIssuers.Store(ci)
	errs = append(errs, problems...)
	if ci.none != nil && !c.cfg.Insecure {
		log.Error(ci.none, "no client certificate can be admitted")
	}
	if len(errs) > 0 {
		log.Error(errors.Join(errs...), "relay credentials incomplete; keeping what loaded before")
	}
	return errors.Join(errs...)
}

// loadRoot takes the roots of relay-root-tls-secret's ca.crt.
func (c *keyring) loadRoot(s *corev1.Secret, now time.Time) ([]*x509.Certificate, error) {
	m, r := relaysecret.Validate(relaysecret.Root, s.Data, "", relaysecret.Context{Now: now})
	if m == nil {
		return nil, fmt.Errorf("secret %s/%s: %w", s.Namespace, s.Name, r.Err())
	}
	c.metrics.setExpiry(certRoot, m.Cert)
	c.metrics.setBundleRoots(m.Roots)
	// The secrets loaded after it in the same load verify to these roots
	// when they have no ca.crt of their own (withoutCA).
	c.rootCerts = m.Roots
	return m.Roots, nil
}

// checkContext is what the signing or server secret s is checked with: its
// own ca.crt, or, when it has none (restored by kubectl create secret
// tls), the relay roots, as the webhook checks it.
func (c *keyring) checkContext(s *corev1.Secret, now time.Time) relaysecret.Context {
	ctx := relaysecret.Context{Authority: c.cfg.Authority, Now: now}
	if len(s.Data[relaysecret.KeyCACert]) == 0 {
		ctx.Roots, ctx.RootsFrom = c.rootCerts, c.cfg.RootTLSSecret.Name
	}
	return ctx
}

// storeBundle makes the relay roots the trust bundle pushed to agents when
// they verify the serving certificate; otherwise there is no bundle, so
// that agents keep the roots they have, and the error says why.
func (c *keyring) storeBundle(now time.Time) error {
	cert := c.server.Load()
	if cert == nil || len(c.rootCerts) == 0 {
		c.rootPEM.Store(nil)
		return nil
	}
	var inter []*x509.Certificate
	for _, der := range cert.Certificate[1:] {
		if ic, err := x509.ParseCertificate(der); err == nil {
			inter = append(inter, ic)
		}
	}
	if _, err := pki.VerifyChain(cert.Leaf, inter, c.rootCerts, pki.RoleServer, now); err != nil {
		c.rootPEM.Store(nil)
		return fmt.Errorf("the server certificate of secret %s does not chain to the relay root of secret %s, so agents are not sent a trust bundle: %w; issue the server certificate under that root",
			c.cfg.TLSSecret.NamespacedName(c.cfg.Namespace), c.cfg.RootTLSSecret.NamespacedName(c.cfg.Namespace), err)
	}
	bundle := pki.EncodeCertificates(c.rootCerts...)
	old := c.rootPEM.Swap(&bundle)
	if c.onBundle != nil && (old == nil || !bytes.Equal(*old, bundle)) {
		c.onBundle(bundle)
	}
	return nil
}

// newClientIssuer makes ca the issuer of client certificates under cfg's
// policy: the client role, for clientCertificateTTL.
func newClientIssuer(ca *pki.Certified, cfg *config.Server, now time.Time) (*pki.Issuer, error) {
	return pki.NewIssuer(ca, pki.Policy{Role: pki.RoleClient, TTL: cfg.ClientCertificateTTL.Duration}, now)
}

// loadSigning makes the signing secret the issuer of the next CSRs and the
// CA client certificates are admitted from, keeping the CA it replaces as
// the previous one (agents holding its certificates can still renew). It
// adds no root: client chains verify to the relay root alone.
func (c *keyring) loadSigning(s *corev1.Secret, now time.Time) ([]*x509.Certificate, error) {
	m, r := relaysecret.Validate(relaysecret.Signing, s.Data, "", c.checkContext(s, now))
	if m == nil {
		return nil, fmt.Errorf("signing secret %s/%s: %w", s.Namespace, s.Name, r.Err())
	}
	ca := m.Certified()
	iss, err := newClientIssuer(ca, c.cfg, now)
	if err != nil {
		return nil, fmt.Errorf("signing secret %s/%s: %w", s.Namespace, s.Name, err)
	}
	c.issuer.Store(iss)
	switch prev := admittedPrevious(m.Previous, append(slices.Clone(m.Roots), c.rootCerts...), now); {
	case prev != nil:
		// Written by relay-server's rotation, so that every replica, a
		// restarted one too, admits the certificates the replaced CA
		// issued.
		c.previousSigningCA = prev
	case c.signingCA != nil && !pki.SameCA(c.signingCA, ca.Cert):
		c.previousSigningCA = c.signingCA
	}
	c.signingCA = ca.Cert
	c.metrics.setExpiry(certIntermediate, ca.Cert)
	return nil, nil
}

// admittedPrevious returns the first CA of the signing secret's
// previous.crt that still verifies at now to roots (the secret's own and
// the relay roots: during a root rotation's Activate the previous CA is
// under the old root, still in the bundle), or nil.
func admittedPrevious(previous, roots []*x509.Certificate, now time.Time) *x509.Certificate {
	for _, prev := range previous {
		if _, err := pki.VerifyChain(prev, nil, roots, pki.RoleSigningCA, now); err == nil {
			return prev
		}
	}
	return nil
}

// loadClientIssuers takes the CA certificates of clientIssuerSecret's
// ca.crt; load admits those that chain to the relay root. The secret holds
// certificates only: relay-server never needs the key of a CA it does not
// sign with.
func (c *keyring) loadClientIssuers(s *corev1.Secret, _ time.Time) ([]*x509.Certificate, error) {
	c.namedCAs = nil
	certs, err := pki.DecodeCertificates(s.Data[relaysecret.KeyCACert])
	if err != nil {
		return nil, fmt.Errorf("secret %s/%s (clientIssuerSecret): ca.crt: %w; put the PEM certificate of each CA that issues client certificates in ca.crt", s.Namespace, s.Name, err)
	}
	var errs []error
	for _, ca := range certs {
		if !ca.BasicConstraintsValid || !ca.IsCA {
			errs = append(errs, fmt.Errorf("secret %s/%s (clientIssuerSecret): ca.crt: %q is not a CA certificate: list the CAs that issue client certificates, not the certificates themselves", s.Namespace, s.Name, ca.Subject.CommonName))
			continue
		}
		c.namedCAs = append(c.namedCAs, ca)
	}
	return nil, errors.Join(errs...)
}

// tokenKey names the identity token secret, in the server's namespace.
func (c *keyring) tokenKey() types.NamespacedName {
	return c.cfg.TokenSecret.NamespacedName(c.cfg.Namespace)
}

// loadToken takes the identity token. Unlike the other pieces, a token
// that no longer decodes is not kept: an edit of a credential means the
// old one is no longer wanted, so the shared token is refused until the
// secret holds a valid one again.
func (c *keyring) loadToken(s *corev1.Secret, _ time.Time) ([]*x509.Certificate, error) {
	m, r := relaysecret.Validate(relaysecret.Token, s.Data, c.cfg.TokenSecret.Key, relaysecret.Context{})
	if m == nil {
		c.token.Store(nil)
		return nil, fmt.Errorf("secret %s/%s: %w; the shared identity token is refused until it is fixed", s.Namespace, s.Name, r.Err())
	}
	c.token.Store(&m.Token)
	return nil, nil
}

// loadServer makes the server secret the serving certificate of new
// handshakes, once it passes the checks the webhook makes (the chain to its
// ca.crt, or to the relay roots when it has none, the authority,
// validity). Its ca.crt verifies nothing else:
// client certificates verify to the relay root alone, so a CA that only
// the server secret names (a corporate root, say) admits no client.
func (c *keyring) loadServer(s *corev1.Secret, now time.Time) ([]*x509.Certificate, error) {
	m, r := relaysecret.Validate(relaysecret.Server, s.Data, "", c.checkContext(s, now))
	if m == nil {
		return nil, fmt.Errorf("server secret %s/%s: %w", s.Namespace, s.Name, r.Err())
	}
	c.server.Store(m.TLSCertificate())
	c.metrics.setExpiry(certServer, m.Cert)
	return nil, nil
}

func dedupe(certs []*x509.Certificate) []*x509.Certificate {
	var out []*x509.Certificate
	for _, c := range certs {
		seen := false
		for _, o := range out {
			seen = seen || o.Equal(c)
		}
		if !seen {
			out = append(out, c)
		}
	}
	return out
}
