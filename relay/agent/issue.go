package agent

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/utils/clock"

	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/pkg/pki"
	"github.com/meshrelay/meshrelay/pkg/relaysecret"
	relayv1 "github.com/meshrelay/meshrelay/relay/api/v1"
)

// issuerOptions are what the issuer needs.
type issuerOptions struct {
	// Config names the cluster and the server and says how to dial it.
	Config *config.Agent
	// Secrets stores the new certificate and names the secrets in errors.
	Secrets *secretStore
	// Provider presents the current certificate when renewing over mTLS.
	Provider *Provider
	// Roots are the trust anchors each handshake reads; nil means the
	// roots of the material obtain is given.
	Roots *rootSet
	Clock clock.PassiveClock
}

// issuer obtains client certificates for the rotator.
type issuer struct{ opts issuerOptions }

// newIssuer returns an issuer; opts.Secrets must have its clients.
func newIssuer(opts issuerOptions) *issuer { return &issuer{opts: opts} }

// obtain gets a new client certificate and stores it, the way the agent's
// material allows: bootstrapping with a fresh bootstrap token, renewing over
// mTLS while the current certificate is valid, issuing with the root key
// when relay-root-tls-secret holds one, or bootstrapping with the token. It
// returns what it did.
func (s *issuer) obtain(ctx context.Context, t *material) (string, error) {
	cfg := s.opts.Config
	key, err := pki.GenerateKey(pki.ECDSAP256)
	if err != nil {
		return "", err
	}
	keyPEM, err := pki.EncodePrivateKey(key)
	if err != nil {
		return "", err
	}
	csr, err := pki.NewCSR(key, cfg.Cluster)
	if err != nil {
		return "", err
	}
	var resp *relayv1.CertificateResponse
	var how, tokenHash string
	roots := s.roots(t)
	bootstrap := func() (*relayv1.CertificateResponse, error) {
		tokenHash = t.tokenHash
		pin, issuer, err := s.bootstrapPin(ctx, roots)
		if err != nil {
			return nil, err
		}
		if issuer != nil {
			how += ", pinning the relay server's issuer to " + pki.CAName(issuer) + " (the issuer of the previous client certificate) or the root"
		}
		return s.request(ctx, roots, nil, pin, func(ctx context.Context, rc relayv1.RelayClient) (*relayv1.CertificateResponse, error) {
			return rc.Bootstrap(ctx, &relayv1.BootstrapRequest{Cluster: cfg.Cluster, Token: string(t.token), Csr: csr})
		})
	}
	switch {
	case t.freshToken && len(t.token) > 0:
		how = "bootstrapped with a fresh bootstrap token"
		resp, err = bootstrap()
	case t.client != nil && t.clientOK == nil && !cfg.Insecure:
		how = "renewed"
		resp, err = s.request(ctx, roots, s.opts.Provider, providerPin(roots, s.opts.Provider, s.opts.Secrets.client.String()), func(ctx context.Context, rc relayv1.RelayClient) (*relayv1.CertificateResponse, error) {
			return rc.Renew(withCluster(ctx, cfg), &relayv1.RenewRequest{Csr: csr})
		})
	case t.rootKey != nil:
		how = "self-issued with the root key"
		c, ierr := t.rootKey.IssueClient(pki.Options{DNSNames: []string{cfg.Cluster}, TTL: config.DefaultClientCertificateTTL, Key: pki.ECDSAP256, Now: s.opts.Clock.Now()})
		if ierr != nil {
			return "", fmt.Errorf("failed to issue a client certificate with the root key: %w", ierr)
		}
		if keyPEM, err = c.KeyPEM(); err != nil {
			return "", err
		}
		resp = &relayv1.CertificateResponse{CertificateChain: c.CertPEM(), CaCertificate: c.CAPEM()}
	case len(t.token) > 0:
		how = "bootstrapped with the bootstrap token"
		resp, err = bootstrap()
	default:
		return "", s.missing(t)
	}
	if err != nil {
		return "", err
	}
	answer := map[string][]byte{relaysecret.KeyTLSCert: resp.GetCertificateChain(), relaysecret.KeyTLSKey: keyPEM, relaysecret.KeyCACert: resp.GetCaCertificate()}
	if _, errs := relaysecret.Decode(relaysecret.Client, answer, ""); len(errs) > 0 {
		return "", fmt.Errorf("relay server returned an unusable certificate: %s", relaysecret.Message(errs))
	}
	if err := s.opts.Secrets.writeClient(ctx, resp.GetCertificateChain(), keyPEM, resp.GetCaCertificate(), tokenHash); err != nil {
		return "", err
	}
	return how, nil
}

// request makes one call over a short-lived connection: server-authenticated
// for Bootstrap (provider nil), mutual TLS with the provider's certificate
// for Renew; pin, when not nil, pins the server certificate's issuer.
func (s *issuer) request(ctx context.Context, roots func() []*x509.Certificate, provider *Provider, pin *serverPin, call func(context.Context, relayv1.RelayClient) (*relayv1.CertificateResponse, error)) (*relayv1.CertificateResponse, error) {
	conn, err := dialPinned(s.opts.Config, roots, provider, pin)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := call(ctx, relayv1.NewRelayClient(conn))
	if err != nil {
		return nil, fmt.Errorf("relay server refused: %w", err)
	}
	return resp, nil
}

// roots returns what the handshakes of obtain read the trust anchors
// from: the agent's, or t's roots when the issuer has none.
func (s *issuer) roots(t *material) func() []*x509.Certificate {
	if s.opts.Roots == nil {
		return func() []*x509.Certificate { return t.roots }
	}
	return s.opts.Roots.Get
}

// bootstrapPin reads the client secret for the certificate it still holds
// (valid, revoked or expired) and returns the pin of the Bootstrap
// connection: the issuer of that certificate or a root, or the roots only
// when the secret is missing or holds no certificate whose issuer is
// known. issuer is the CA pinned to, nil when the roots only pin.
func (s *issuer) bootstrapPin(ctx context.Context, roots func() []*x509.Certificate) (pin *serverPin, issuer *x509.Certificate, err error) {
	if s.opts.Config.Insecure {
		return nil, nil, nil
	}
	sec, err := s.opts.Secrets.get(ctx, s.opts.Secrets.client)
	var miss *errMissing
	if errors.As(err, &miss) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("failed to read the previous client certificate to pin the relay server's issuer: %w", err)
	}
	pin, issuer = bootstrapPin(sec, roots)
	return pin, issuer, nil
}

// missing names what the agent needs and does not have.
func (s *issuer) missing(t *material) error {
	sec := s.opts.Secrets
	switch {
	case len(t.roots) == 0 && s.opts.Config.TrustBundleDir != "":
		return fmt.Errorf("%w: the trust bundle folder %s holds no root CA; it mounts ca.crt of secret %s: copy it from the management cluster (relayctl register), or provide %s",
			errWaitingForTrust, s.opts.Config.TrustBundleDir, sec.root, sec.client)
	case len(t.roots) == 0:
		return fmt.Errorf("%w: secret %s with ca.crt is missing; copy it from the management cluster (relayctl register), or provide %s",
			errWaitingForTrust, sec.root, sec.client)
	default:
		return fmt.Errorf("%w: no valid client certificate in %s (%v) and no bootstrap token in secret %s key %q; issue one with relayctl register %s",
			errWaitingForTrust, sec.client, t.clientOK, sec.token, sec.tokKey, s.opts.Config.Cluster)
	}
}

// refusedByServer reports whether err is the relay server refusing the
// agent (Unauthenticated or PermissionDenied): a spent, expired or foreign
// bootstrap token, or an unregistered cluster. Retrying alone does not
// help; the server's message names what does.
func refusedByServer(err error) bool {
	var st interface{ GRPCStatus() *status.Status }
	if !errors.As(err, &st) {
		return false
	}
	switch st.GRPCStatus().Code() {
	case codes.Unauthenticated, codes.PermissionDenied:
		return true
	}
	return false
}
