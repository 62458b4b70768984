package server

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"

	"github.com/meshrelay/meshrelay/pkg/relaysecret"
)

// tlsConfig returns the listener's TLS configuration. Each handshake takes
// the current serving certificate and client roots. A client certificate
// is optional (Bootstrap has none) but, when given, must verify to the
// roots for client auth and carry exactly one DNS name that is a cluster
// name; VerifyConnection checks this on every handshake, resumed ones too.
func (c *keyring) tlsConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			cert := c.server.Load()
			if cert == nil {
				return nil, errors.New("no server certificate loaded yet")
			}
			roots := c.roots.Load()
			if s := c.serving.Load(); s != nil && s.cert == cert && s.roots == roots {
				return s.config, nil
			}
			s := &servingConfig{cert: cert, roots: roots, config: &tls.Config{
				MinVersion:       tls.VersionTLS12,
				Certificates:     []tls.Certificate{*cert},
				ClientAuth:       tls.VerifyClientCertIfGiven,
				ClientCAs:        roots,
				NextProtos:       []string{"h2"},
				VerifyConnection: c.verifyClient,
			}}
			if roots == nil {
				s.config.ClientCAs = x509.NewCertPool()
			}
			s.config.SetSessionTicketKeys([][32]byte{newTicketKey()})
			c.serving.Store(s)
			return s.config, nil
		},
	}
}

// servingConfig is the TLS configuration made from one server certificate
// and one root pool, with session ticket keys of its own: a session
// resumes only under the certificate and roots that verified it, and
// after a root, signing or server change every client makes a full
// handshake, verified against the new roots.
type servingConfig struct {
	cert   *tls.Certificate
	roots  *x509.CertPool
	config *tls.Config
}

// newTicketKey returns a random session ticket key.
func newTicketKey() [32]byte {
	var k [32]byte
	_, _ = rand.Read(k[:]) // crypto/rand.Read never fails; it aborts the program instead
	return k
}

// verifyClient accepts a connection with no client certificate, and one
// whose verified certificate names exactly one cluster, comes from an
// issuer the server admits client certificates from, and may still act for
// its cluster (admitHandshake).
func (c *keyring) verifyClient(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return nil
	}
	if len(cs.VerifiedChains) == 0 {
		return errors.New("client certificate did not verify")
	}
	cluster, err := relaysecret.PeerIdentity(cs.VerifiedChains[0])
	if err != nil {
		return err
	}
	if err := c.checkClientIssuer(cs.VerifiedChains); err != nil {
		// Anyone whose certificate verifies can make the server refuse
		// it: the line is rate-limited.
		if c.refusals != nil {
			c.refusals.info(c.log, "refused a client certificate from a CA that may not issue them", "cluster", cluster, "reason", err.Error())
		}
		return err
	}
	if admit := c.admitHandshake; admit != nil {
		return admit(cluster, cs.VerifiedChains[0][0])
	}
	return nil
}
