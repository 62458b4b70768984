package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"

	"google.golang.org/grpc"
	grpccreds "google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/meshrelay/meshrelay/pkg/config"
)

// InsecureClusterHeader names the agent's cluster in insecure mode; it
// matches the server's.
const InsecureClusterHeader = "x-meshrelay-cluster"

// maxMessageBytes bounds every message the agent receives.
const maxMessageBytes = 64 << 10

// dial connects to the relay server. The roots are pinned (only they verify
// the server), the SNI is the authority, and Go's TLS client checks the
// serverAuth usage and that the certificate's DNS names cover the
// authority. With provider set, every handshake presents the provider's
// current client certificate, and the server certificate's issuer is
// pinned too: it must be the CA that issued that client certificate, or a
// root itself (serverPin).
func dial(cfg *config.Agent, roots []*x509.Certificate, provider *Provider) (*grpc.ClientConn, error) {
	var pin *serverPin
	if provider != nil {
		pin = providerPin(roots, provider, cfg.ClientTLSSecret.NamespacedName(cfg.Namespace).String())
	}
	return dialPinned(cfg, roots, provider, pin)
}

// dialPinned is dial with the server's issuer pinned by pin (the roots only
// when nil), whether or not a provider presents a client certificate:
// Bootstrap pins without presenting one.
func dialPinned(cfg *config.Agent, roots []*x509.Certificate, provider *Provider, pin *serverPin) (*grpc.ClientConn, error) {
	var creds grpccreds.TransportCredentials
	if cfg.Insecure {
		creds = insecure.NewCredentials()
	} else {
		if len(roots) == 0 {
			return nil, fmt.Errorf("no root CA to verify the relay server with: add ca.crt to secret %s", cfg.RootTLSSecret.Name)
		}
		pool := x509.NewCertPool()
		for _, r := range roots {
			pool.AddCert(r)
		}
		tc := &tls.Config{RootCAs: pool, ServerName: cfg.Authority, MinVersion: tls.VersionTLS12}
		if provider != nil {
			tc.GetClientCertificate = provider.GetClientCertificate
		}
		if pin != nil {
			tc.VerifyConnection = pin.verify
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

// withCluster adds the insecure-mode cluster header.
func withCluster(ctx context.Context, cfg *config.Agent) context.Context {
	if !cfg.Insecure {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, InsecureClusterHeader, cfg.Cluster)
}
