package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc"
	grpccreds "google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
	"github.com/meshrelay/meshrelay/pkg/config"
)

// InsecureClusterHeader names the agent's cluster in insecure mode; it
// matches the server's.
const InsecureClusterHeader = "x-meshrelay-cluster"

// maxMessageBytes bounds every message the agent receives.
const maxMessageBytes = 64 << 10

// dial connects to the relay server. The roots that roots returns at each
// handshake are pinned (only they verify the server, so a root that joins
// or leaves the trust anchors counts from the next handshake on, while
// open connections stay), the SNI is the authority, and the server
// certificate must carry serverAuth and a DNS name covering the authority.
// With provider set, every handshake presents the provider's current
// client certificate, and the server certificate's issuer is pinned too:
// it must be the CA that issued that client certificate, or a root itself
// (serverPin).
func dial(cfg *config.Agent, roots func() []*x509.Certificate, provider *Provider) (*grpc.ClientConn, error) {
	var pin *serverPin
	if provider != nil {
		pin = providerPin(roots, provider, cfg.ClientTLSSecret.NamespacedName(cfg.Namespace).String())
	}
	return dialPinned(cfg, roots, provider, pin)
}

// dialPinned is dial with the server's issuer pinned by pin (the roots only
// when nil), whether or not a provider presents a client certificate:
// Bootstrap pins without presenting one.
func dialPinned(cfg *config.Agent, roots func() []*x509.Certificate, provider *Provider, pin *serverPin) (*grpc.ClientConn, error) {
	var creds grpccreds.TransportCredentials
	if cfg.Insecure {
		creds = insecure.NewCredentials()
	} else {
		if len(roots()) == 0 {
			return nil, noRootsError(cfg)
		}
		check := &serverCheck{roots: roots, authority: cfg.Authority, pin: pin}
		tc := &tls.Config{
			ServerName: cfg.Authority,
			MinVersion: tls.VersionTLS12,
			// The chain is verified by check.verify against the roots of
			// the moment, which a fixed RootCAs pool could not follow;
			// VerifyConnection runs on every handshake, before the client
			// certificate is sent, and a failure aborts it.
			InsecureSkipVerify: true, //nolint:gosec // verified in VerifyConnection
			VerifyConnection:   check.verify,
		}
		if provider != nil {
			tc.GetClientCertificate = provider.GetClientCertificate
		}
		creds = grpccreds.NewTLS(tc)
	}
	conn, err := grpc.NewClient(cfg.ServerAddress,
		grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMessageBytes)),
	)
	if err != nil {
		return nil, fmt.Errorf("failed to dial relay server %s: %w", cfg.ServerAddress, err)
	}
	return conn, nil
}

// noRootsError says the agent has no root to verify the server with, and
// where it takes them from.
func noRootsError(cfg *config.Agent) error {
	if cfg.TrustBundleDir != "" {
		return fmt.Errorf("no root CA to verify the relay server with: the trust bundle folder %s holds no certificate; it mounts ca.crt of secret %s and the ClusterTrustBundle of signer %s: copy the secret from the management cluster (relayctl register)",
			cfg.TrustBundleDir, cfg.RootTLSSecret.NamespacedName(cfg.Namespace), v1alpha1.TrustBundleSignerName)
	}
	return fmt.Errorf("no root CA to verify the relay server with: add ca.crt to secret %s", cfg.RootTLSSecret.Name)
}

// serverCheck verifies the relay server's certificate on each handshake:
// the chain to the roots of that moment, serverAuth, the authority, and
// then the pin, when there is one.
type serverCheck struct {
	roots     func() []*x509.Certificate
	authority string
	pin       *serverPin
}

// verify is a tls.Config.VerifyConnection.
func (c *serverCheck) verify(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("relay server presented no certificate")
	}
	roots := c.roots()
	if len(roots) == 0 {
		return errors.New("no root CA to verify the relay server with")
	}
	chains, err := verifyServer(cs.PeerCertificates, roots, c.authority, time.Now())
	if err != nil {
		return fmt.Errorf("relay server certificate does not verify to the relay roots: %w", err)
	}
	if c.pin == nil {
		return nil
	}
	return c.pin.check(cs.PeerCertificates[0], chains)
}

// withCluster adds the insecure-mode cluster header.
func withCluster(ctx context.Context, cfg *config.Agent) context.Context {
	if !cfg.Insecure {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, InsecureClusterHeader, cfg.Cluster)
}
