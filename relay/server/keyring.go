package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
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
// certificate, the roots that verify clients, the issuer that signs CSRs
// and the identity token. load replaces each piece when its secret changes; a secret that
// fails to decode is logged and the previous piece kept, so a bad edit
// never takes the server down. New handshakes and signatures use whatever
// is current; established connections are not touched.
type keyring struct {
	cfg     *config.Server
	metrics *metrics

	server  atomic.Pointer[tls.Certificate]
	roots   atomic.Pointer[x509.CertPool]
	rootPEM atomic.Pointer[[]byte]
	issuer  atomic.Pointer[pki.Issuer]
	token   atomic.Pointer[[]byte]
	// serving is the TLS configuration built from the current server and
	// roots, shared by every handshake until either changes: a
	// connection keeps its configuration for its whole life.
	serving atomic.Pointer[servingConfig]
	// admitHandshake, when set, decides whether a verified client
	// certificate may still act for its cluster (revocation, binding).
	admitHandshake func(cluster string, cert *x509.Certificate) error

	// mu serialises load; seen remembers what each secret's last decoded
	// version gave, so that a change to one secret decodes only that one.
	mu   sync.Mutex
	seen map[types.NamespacedName]loadedSecret
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
// signing secret only while the CA is enabled.
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
	return loaders
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
// last load, and rebuilds the client roots. It returns what is missing or
// broken, for readiness and the log.
func (c *keyring) load(ctx context.Context, r client.Reader, now time.Time, log logr.Logger) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var errs []error
	var roots []*x509.Certificate
	for _, p := range c.loaders() {
		var s corev1.Secret
		if err := r.Get(ctx, p.key, &s); err != nil {
			delete(c.seen, p.key)
			if apierrors.IsNotFound(err) {
				errs = append(errs, fmt.Errorf("secret %s is missing", p.key))
			} else {
				errs = append(errs, fmt.Errorf("failed to get secret %s: %w", p.key, err))
			}
			continue
		}
		d, ok := c.seen[p.key]
		if !ok || d.resourceVersion != s.ResourceVersion {
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
		pool := x509.NewCertPool()
		for _, r := range roots {
			pool.AddCert(r)
		}
		c.roots.Store(pool)
		pemRoots := pki.EncodeCertificates(dedupe(roots)...)
		c.rootPEM.Store(&pemRoots)
	}
	if len(errs) > 0 {
		log.Info("relay credentials incomplete; keeping what loaded before", "problems", errors.Join(errs...).Error())
	}
	return errors.Join(errs...)
}

// loadRoot takes the roots of relay-root-tls-secret's ca.crt.
func (c *keyring) loadRoot(s *corev1.Secret, now time.Time) ([]*x509.Certificate, error) {
	m, r := relaysecret.Validate(relaysecret.Root, s.Data, "", relaysecret.Context{Now: now})
	if m == nil {
		return nil, fmt.Errorf("secret %s/%s: %w", s.Namespace, s.Name, r.Err())
	}
	c.metrics.setExpiry(certRoot, m.Roots[0])
	return m.Roots, nil
}

// loadSigning makes the signing secret the issuer of the next CSRs and
// returns its root.
func (c *keyring) loadSigning(s *corev1.Secret, now time.Time) ([]*x509.Certificate, error) {
	m, r := relaysecret.Validate(relaysecret.Signing, s.Data, "", relaysecret.Context{Now: now})
	if m == nil {
		return nil, fmt.Errorf("signing secret %s/%s: %w", s.Namespace, s.Name, r.Err())
	}
	ca := m.Certified()
	iss, err := pki.NewIssuer(ca, pki.Policy{Role: pki.RoleClient, TTL: c.cfg.ClientCertificateTTL.Duration}, now)
	if err != nil {
		return nil, fmt.Errorf("signing secret %s/%s: %w", s.Namespace, s.Name, err)
	}
	c.issuer.Store(iss)
	c.metrics.setExpiry(certIntermediate, ca.Cert)
	return []*x509.Certificate{ca.Root()}, nil
}

// loadToken takes the identity token.
func (c *keyring) loadToken(s *corev1.Secret, _ time.Time) ([]*x509.Certificate, error) {
	m, r := relaysecret.Validate(relaysecret.Token, s.Data, c.cfg.TokenSecret.Key, relaysecret.Context{})
	if m == nil {
		return nil, fmt.Errorf("secret %s/%s: %w", s.Namespace, s.Name, r.Err())
	}
	c.token.Store(&m.Token)
	return nil, nil
}

// loadServer makes the server secret the serving certificate of new
// handshakes, once it passes the checks the webhook makes (the chain to its
// ca.crt, the authority, validity), and returns its ca.crt, which also
// verifies clients; a secret whose pair is unusable still contributes the
// ca.crt that decodes.
func (c *keyring) loadServer(s *corev1.Secret, now time.Time) ([]*x509.Certificate, error) {
	m, errs := relaysecret.Decode(relaysecret.Server, s.Data, "")
	if len(errs) == 0 {
		errs = relaysecret.Check(m, relaysecret.Context{Authority: c.cfg.Authority, Now: now}).Errs
	}
	if len(errs) > 0 {
		return m.Roots, fmt.Errorf("server secret %s/%s: %s", s.Namespace, s.Name, relaysecret.Message(errs))
	}
	c.server.Store(m.TLSCertificate())
	c.metrics.setExpiry(certServer, m.Cert)
	return m.Roots, nil
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
