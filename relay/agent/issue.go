package agent

import (
	"context"
	"crypto/x509"
	"fmt"
	"time"

	"github.com/meshrelay/meshrelay/pkg/pki"
	relayv1 "github.com/meshrelay/meshrelay/relay/api/v1"
)

// selfIssueTTL is the lifetime of a certificate an agent issues itself
// with the root key; the rotator renews it like any other.
const selfIssueTTL = 365 * 24 * time.Hour

// obtain gets a new client certificate and stores it, the way the agent's
// trust allows: renewing over mTLS while the current certificate is valid,
// issuing with the root key when relay-root-tls-secret holds one, or
// bootstrapping with the identity token. It returns what it did.
func (a *Agent) obtain(ctx context.Context, t *trust) (string, error) {
	key, err := pki.GenerateKey(pki.ECDSAP256)
	if err != nil {
		return "", err
	}
	keyPEM, err := pki.EncodePrivateKey(key)
	if err != nil {
		return "", err
	}
	csr, err := pki.NewCSR(key, a.cfg.Cluster)
	if err != nil {
		return "", err
	}
	var resp *relayv1.CertificateResponse
	var how string
	switch {
	case t.client != nil && t.clientOK == nil && !a.cfg.Insecure:
		how = "renewed"
		resp, err = a.request(ctx, t.roots, true, func(ctx context.Context, rc relayv1.RelayClient) (*relayv1.CertificateResponse, error) {
			return rc.Renew(withCluster(ctx, a.cfg), &relayv1.RenewRequest{Csr: csr})
		})
	case t.rootKey != nil:
		how = "self-issued with the root key"
		c, ierr := t.rootKey.IssueClient(pki.Options{DNSNames: []string{a.cfg.Cluster}, TTL: selfIssueTTL, Key: pki.ECDSAP256, Now: a.now()})
		if ierr != nil {
			return "", fmt.Errorf("failed to issue a client certificate with the root key: %w", ierr)
		}
		if keyPEM, err = c.KeyPEM(); err != nil {
			return "", err
		}
		resp = &relayv1.CertificateResponse{CertificateChain: c.CertPEM(), CaCertificate: c.CAPEM()}
	case len(t.token) > 0:
		how = "bootstrapped with the identity token"
		resp, err = a.request(ctx, t.roots, false, func(ctx context.Context, rc relayv1.RelayClient) (*relayv1.CertificateResponse, error) {
			return rc.Bootstrap(ctx, &relayv1.BootstrapRequest{Cluster: a.cfg.Cluster, Token: string(t.token), Csr: csr})
		})
	default:
		return "", a.missingTrust(t)
	}
	if err != nil {
		return "", err
	}
	if _, err := pki.DecodeKeyPair(resp.GetCertificateChain(), keyPEM, resp.GetCaCertificate()); err != nil {
		return "", fmt.Errorf("relay server returned an unusable certificate: %w", err)
	}
	if err := a.secrets.writeClient(ctx, resp.GetCertificateChain(), keyPEM, resp.GetCaCertificate()); err != nil {
		return "", err
	}
	return how, nil
}

// request makes one call over a short-lived connection: server-authenticated
// for Bootstrap, mutual TLS with the provider's certificate for Renew.
func (a *Agent) request(ctx context.Context, roots []*x509.Certificate, mtls bool, call func(context.Context, relayv1.RelayClient) (*relayv1.CertificateResponse, error)) (*relayv1.CertificateResponse, error) {
	var p *Provider
	if mtls {
		p = a.provider
	}
	conn, err := dial(a.cfg, roots, p)
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

// missingTrust names what the agent needs and does not have.
func (a *Agent) missingTrust(t *trust) error {
	switch {
	case len(t.roots) == 0:
		return fmt.Errorf("waiting for trust: secret %s with ca.crt is missing; copy it from the management cluster (relayctl register), or provide %s",
			a.secrets.root, a.secrets.client)
	default:
		return fmt.Errorf("waiting for trust: no valid client certificate in %s (%v) and no identity token in secret %s key %q; copy the token from the management cluster (relayctl register)",
			a.secrets.client, t.clientOK, a.secrets.token, a.secrets.tokKey)
	}
}
