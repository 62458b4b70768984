package server

import (
	"context"
	"net"
	"time"

	grpccreds "google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// closableCreds wraps the server's transport credentials so that each
// connection's AuthInfo carries the connection: dropping a cluster closes
// its connections, which ends a push stream blocked in Recv without a
// second goroutine per stream to watch for the drop.
type closableCreds struct {
	grpccreds.TransportCredentials
}

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
// its pull stream is told why, so that the reason reaches the agent.
const closeGrace = time.Second

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
