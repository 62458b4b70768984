package server

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"time"

	grpccreds "google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// closableCreds wrap the insecure mode's transport credentials so that
// each connection's AuthInfo carries the connection, as tlsCreds' does:
// dropping a cluster closes its connections, which ends a push stream
// blocked in Recv without a second goroutine per stream to watch for the
// drop.
type closableCreds struct {
	grpccreds.TransportCredentials
}

// tlsCreds are the listener's transport credentials over TLS. gRPC's own
// TLS credentials copy the configuration that GetConfigForClient returns on
// every handshake, and the copy lives as long as the connection; these give
// crypto/tls the shared serving configuration as it is, which already
// offers only h2 and TLS 1.2 or later (see make bench).
type tlsCreds struct {
	config *tls.Config
	// limits, when set, bound the connections without a client
	// certificate (admitAnonymous).
	limits *callLimits
}

func (c tlsCreds) ServerHandshake(raw net.Conn) (net.Conn, grpccreds.AuthInfo, error) {
	conn := tls.Server(raw, c.config)
	// gRPC bounds the handshake with a deadline on raw.
	if err := conn.Handshake(); err != nil {
		_ = conn.Close()
		return nil, nil, err
	}
	state := conn.ConnectionState()
	if state.NegotiatedProtocol != "h2" {
		_ = conn.Close()
		return nil, nil, errors.New("the client did not negotiate h2 by ALPN: connect with a gRPC client")
	}
	info := grpccreds.TLSInfo{State: state, CommonAuthInfo: grpccreds.CommonAuthInfo{SecurityLevel: grpccreds.PrivacyAndIntegrity}}
	var out net.Conn = conn
	if len(state.PeerCertificates) == 0 && c.limits != nil {
		var err error
		if out, err = c.limits.admitAnonymous(conn); err != nil {
			return nil, nil, err
		}
	}
	return out, closableInfo{AuthInfo: info, conn: out}, nil
}

func (tlsCreds) ClientHandshake(context.Context, string, net.Conn) (net.Conn, grpccreds.AuthInfo, error) {
	return nil, nil, errors.New("relay-server's transport credentials only accept connections")
}

func (tlsCreds) Info() grpccreds.ProtocolInfo { return grpccreds.ProtocolInfo{SecurityProtocol: "tls"} }

// Clone returns c: its configuration is never changed after it is made.
func (c tlsCreds) Clone() grpccreds.TransportCredentials { return c }

// OverrideServerName is deprecated in gRPC and meaningless on a server.
func (tlsCreds) OverrideServerName(string) error { return nil }

// closableInfo is the AuthInfo of a connection, with the connection.
type closableInfo struct {
	grpccreds.AuthInfo
	conn net.Conn
}

func (c closableCreds) ServerHandshake(raw net.Conn) (net.Conn, grpccreds.AuthInfo, error) {
	conn, info, err := c.TransportCredentials.ServerHandshake(raw)
	if err != nil {
		return nil, nil, err
	}
	return conn, closableInfo{AuthInfo: info, conn: conn}, nil
}

func (c closableCreds) Clone() grpccreds.TransportCredentials {
	return closableCreds{c.TransportCredentials.Clone()}
}

// authInfo returns the AuthInfo the transport credentials made for the
// caller's connection.
func authInfo(ctx context.Context) grpccreds.AuthInfo {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil
	}
	if ci, ok := p.AuthInfo.(closableInfo); ok {
		return ci.AuthInfo
	}
	return p.AuthInfo
}

// closeGrace is how long a dropped cluster's connection stays open after
// its pull stream is told why, so that the reason reaches the agent. A push
// or Connect stream ends only with its connection, so this bounds how long
// a revoked or expired certificate's stream outlives the decision: well
// within the second revocation promises.
const closeGrace = 250 * time.Millisecond

// connCloser returns a function that closes the caller's connection after
// closeGrace, or nil when the connection is not known.
func connCloser(ctx context.Context) func() {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil
	}
	ci, ok := p.AuthInfo.(closableInfo)
	if !ok {
		return nil
	}
	return func() { time.AfterFunc(closeGrace, func() { _ = ci.conn.Close() }) }
}
