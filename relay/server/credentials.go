package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/pkg/pki"
)

// credentials is the server's live material: its serving certificate, the
// roots that verify clients, the issuer that signs CSRs and the identity
// token. load replaces each piece when its secret changes; a secret that
// fails to decode is logged and the previous piece kept, so a bad edit
// never takes the server down. New handshakes and signatures use whatever
// is current; established connections are not touched.
type credentials struct {
	cfg     *config.Server
	metrics *metrics

	server  atomic.Pointer[tls.Certificate]
	roots   atomic.Pointer[x509.CertPool]
	rootPEM atomic.Pointer[[]byte]
	issuer  atomic.Pointer[pki.Issuer]
	token   atomic.Pointer[[]byte]
}

func newCredentials(cfg *config.Server, m *metrics) *credentials {
	return &credentials{cfg: cfg, metrics: m}
}

// secretKeys are the secrets load reads.
func (c *credentials) secretKeys() []types.NamespacedName {
	ns := c.cfg.Namespace
	return []types.NamespacedName{
		c.cfg.TLSSecret.NamespacedName(ns), c.cfg.RootTLSSecret.NamespacedName(ns), c.cfg.SigningTLSSecret.NamespacedName(ns),
		c.cfg.TokenSecret.NamespacedName(ns),
	}
}

// load reads every secret and replaces what changed. It returns what is
// missing or broken, for readiness and the log.
func (c *credentials) load(ctx context.Context, r client.Reader, now time.Time, log logr.Logger) error {
	ns := c.cfg.Namespace
	var errs []error
	get := func(key types.NamespacedName) *corev1.Secret {
		var s corev1.Secret
		if err := r.Get(ctx, key, &s); err != nil {
			if apierrors.IsNotFound(err) {
				errs = append(errs, fmt.Errorf("secret %s is missing", key))
			} else {
				errs = append(errs, fmt.Errorf("failed to get secret %s: %w", key, err))
			}
			return nil
		}
		return &s
	}

	var roots []*x509.Certificate
	if s := get(c.cfg.RootTLSSecret.NamespacedName(ns)); s != nil {
		certs, err := pki.DecodeCertificates(s.Data[pki.KeyCACert])
		if err != nil {
			errs = append(errs, fmt.Errorf("secret %s/%s: %w", s.Namespace, s.Name, &pki.SecretError{Key: pki.KeyCACert, Err: err}))
		} else {
			roots = append(roots, certs...)
			c.metrics.setExpiry(certRoot, certs[0])
		}
	}

	if s := get(c.cfg.TLSSecret.NamespacedName(ns)); s != nil {
		serverRoots, err := c.loadServer(s, now)
		if err != nil {
			errs = append(errs, err)
		}
		roots = append(roots, serverRoots...)
	}

	if !c.cfg.DisableCa {
		if s := get(c.cfg.SigningTLSSecret.NamespacedName(ns)); s != nil {
			ca, err := certifiedFromSecret(s)
			if err == nil && ca.Key == nil {
				err = fmt.Errorf("secret %s/%s has no tls.key: the signing CA needs its key", s.Namespace, s.Name)
			}
			var iss *pki.Issuer
			if err == nil {
				iss, err = pki.NewIssuer(ca, pki.Policy{Role: pki.RoleClient, TTL: c.cfg.ClientCertificateTTL.Duration}, now)
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("signing secret %s/%s: %w", s.Namespace, s.Name, err))
			} else {
				c.issuer.Store(iss)
				c.metrics.setExpiry(certIntermediate, ca.Cert)
				roots = append(roots, ca.Root())
			}
		}
	}

	if s := get(c.cfg.TokenSecret.NamespacedName(ns)); s != nil {
		if tok := s.Data[c.cfg.TokenSecret.Key]; len(tok) > 0 {
			c.token.Store(&tok)
		} else {
			errs = append(errs, fmt.Errorf("secret %s/%s has no %q key: add the identity token", s.Namespace, s.Name, c.cfg.TokenSecret.Key))
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

// loadServer makes the server secret the serving certificate of new
// handshakes and returns its ca.crt, which also verifies clients; a secret
// whose pair is unusable still contributes its ca.crt.
func (c *credentials) loadServer(s *corev1.Secret, now time.Time) ([]*x509.Certificate, error) {
	kp, err := pki.DecodeKeyPair(s.Data[pki.KeyTLSCert], s.Data[pki.KeyTLSKey], s.Data[pki.KeyCACert])
	if err != nil {
		roots, _ := pki.DecodeCertificates(s.Data[pki.KeyCACert])
		return roots, fmt.Errorf("server secret %s/%s: %w", s.Namespace, s.Name, err)
	}
	if err := pki.CoversAuthority(kp.Cert, c.cfg.Authority); err != nil {
		return kp.Roots, fmt.Errorf("server secret %s/%s: %w", s.Namespace, s.Name, err)
	}
	if err := pki.CheckValidity(kp.Cert, now); err != nil {
		return kp.Roots, fmt.Errorf("server secret %s/%s: %w", s.Namespace, s.Name, err)
	}
	c.server.Store(kp.TLSCertificate())
	c.metrics.setExpiry(certServer, kp.Cert)
	return kp.Roots, nil
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

// tlsConfig returns the listener's TLS configuration. Each handshake takes
// the current serving certificate and client roots. A client certificate
// is optional (Bootstrap has none) but, when given, must verify to the
// roots for client auth and carry exactly one DNS name that is a cluster
// name; VerifyConnection checks this on every handshake, resumed ones too.
func (c *credentials) tlsConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			cert := c.server.Load()
			if cert == nil {
				return nil, errors.New("no server certificate loaded yet")
			}
			roots := c.roots.Load()
			if roots == nil {
				roots = x509.NewCertPool()
			}
			return &tls.Config{
				MinVersion:       tls.VersionTLS12,
				Certificates:     []tls.Certificate{*cert},
				ClientAuth:       tls.VerifyClientCertIfGiven,
				ClientCAs:        roots,
				NextProtos:       []string{"h2"},
				VerifyConnection: verifyClient,
			}, nil
		},
	}
}

func verifyClient(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return nil
	}
	if len(cs.VerifiedChains) == 0 {
		return errors.New("client certificate did not verify")
	}
	_, err := pki.ClientIdentity(cs.VerifiedChains[0][0])
	return err
}
