package server

import (
	"context"
	"crypto/x509"
	"net"

	"google.golang.org/grpc/codes"
	grpccreds "google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/meshrelay/meshrelay/pkg/pki"
)

// InsecureClusterHeader names the caller's cluster in insecure mode, where
// no certificate can. It is trusted as is: insecure mode is for tests.
const InsecureClusterHeader = "x-meshrelay-cluster"

// caller is who made a call: the cluster it proved, and the certificate it
// proved it with (nil in insecure mode).
type caller struct {
	cluster string
	cert    *x509.Certificate
}

// callerOf returns the cluster the caller proved with its verified client
// certificate (its one DNS SAN), or in insecure mode the cluster it names in
// InsecureClusterHeader.
func callerOf(ctx context.Context, insecure bool) (*caller, error) {
	if insecure {
		md, _ := metadata.FromIncomingContext(ctx)
		if v := md.Get(InsecureClusterHeader); len(v) == 1 && pki.CheckDNSLabel(v[0]) == nil {
			return &caller{cluster: v[0]}, nil
		}
		return nil, status.Errorf(codes.Unauthenticated, "insecure mode: send the cluster name in the %s header", InsecureClusterHeader)
	}
	info, ok := authInfo(ctx).(grpccreds.TLSInfo)
	if !ok || len(info.State.VerifiedChains) == 0 {
		return nil, status.Error(codes.Unauthenticated, "this call needs a client certificate: bootstrap first, then connect with relay-client-tls-secret")
	}
	leaf := info.State.VerifiedChains[0][0]
	name, err := pki.ClientIdentity(leaf)
	if err != nil {
		return nil, status.Error(codes.Unauthenticated, err.Error())
	}
	return &caller{cluster: name, cert: leaf}, nil
}

// peerHost returns the caller's IP address, the key of its rate limit.
func peerHost(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return "unknown"
	}
	host, _, err := net.SplitHostPort(p.Addr.String())
	if err != nil {
		return p.Addr.String()
	}
	return host
}
