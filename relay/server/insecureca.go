package server

import (
	"fmt"
	"time"

	"github.com/meshrelay/meshrelay/pkg/pki"
	"github.com/meshrelay/meshrelay/pkg/relaysecret"
)

// insecureCALifetime bounds the in-memory CA of insecure mode: it lives as
// long as the process, and a restart makes a new one.
const insecureCALifetime = 30 * 24 * time.Hour

// useInsecureCA makes the issuer of insecure mode: a root and a signing
// intermediate made in memory at start, never written anywhere, so that a
// server with no TLS and no authentication never signs with the CA of
// relay-tls-signing-secret (which the keyring does not even read in this
// mode). What it signs chains to nothing anyone trusts.
func (s *Server) useInsecureCA() error {
	now := s.opts.Clock.Now()
	root, err := pki.NewRootCA(pki.Options{CommonName: "meshrelay insecure-mode root (in memory)", Organization: []string{relaysecret.Organization}, TTL: insecureCALifetime, Now: now})
	if err != nil {
		return fmt.Errorf("failed to make the in-memory CA of insecure mode: %w", err)
	}
	signing, err := root.NewIntermediateCA(pki.Options{CommonName: "meshrelay insecure-mode signing CA (in memory)", Organization: []string{relaysecret.Organization}, TTL: insecureCALifetime, Now: now})
	if err != nil {
		return fmt.Errorf("failed to make the in-memory CA of insecure mode: %w", err)
	}
	iss, err := newClientIssuer(signing, s.cfg, now)
	if err != nil {
		return fmt.Errorf("failed to make the in-memory CA of insecure mode: %w", err)
	}
	s.keys.issuer.Store(iss)
	s.log.Info("insecure mode: client certificates are signed by a CA made in memory at start and never stored; secret "+
		s.cfg.SigningTLSSecret.NamespacedName(s.cfg.Namespace).String()+" is not read, and RootTrustPolicies are not served",
		"rootSHA256", pki.Fingerprint(root.Cert))
	return nil
}
