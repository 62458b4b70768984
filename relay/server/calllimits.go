package server

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	grpccreds "google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"

	"github.com/meshrelay/meshrelay/pkg/pki"
)

// What a caller may hold of relay-server before its call's handler runs.
// gRPC reads a call's headers and its request message before the handler,
// and so before any token, certificate or rate check of ours: a goroutine
// and up to maxMessageBytes per call. Without bounds, one connection with
// no certificate could hold gigabytes (many calls, each with large headers
// or a message announced and never finished). These bounds make what
// callers hold a few tens of MiB at most.
const (
	// maxHeaderListBytes bounds a call's headers; an agent's are a few
	// hundred bytes. gRPC's default is 16 MiB.
	maxHeaderListBytes = 16 << 10
	// maxStreamsPerConnection bounds the calls in flight on one
	// connection; an agent holds one Connect stream (or a push and a
	// pull stream) on it, and renews on a connection of its own.
	maxStreamsPerConnection = 100
	// handshakeTimeout bounds a connection's TLS handshake (gRPC's
	// default is 120 s).
	handshakeTimeout = 20 * time.Second

	// defaultMaxAnonymousCalls bounds the calls in flight, over every
	// connection, of callers without a client certificate (Bootstrap,
	// or a call that will be refused for want of one).
	defaultMaxAnonymousCalls = 128
	// defaultAnonymousCallTimeout ends such a call that has not been
	// answered within it: a bootstrap takes milliseconds.
	defaultAnonymousCallTimeout = 20 * time.Second
	// defaultMaxAnonymousConns bounds the open connections without a
	// client certificate; a connection beyond it is closed once its
	// handshake shows it has none.
	defaultMaxAnonymousConns = 1024
	// defaultAnonymousConnLifetime closes a connection without a client
	// certificate this long after its handshake: relay-agent makes one
	// per bootstrap and closes it after the answer.
	defaultAnonymousConnLifetime = time.Minute
	// clusterCallsBeyondStreams is how many calls one cluster may have in
	// flight, over all its connections, beyond maxStreamsPerCluster: its
	// renewals and Istio CSRs.
	clusterCallsBeyondStreams = 16
)

// callLimits holds the bounds above and counts what they bound. The
// bounds are atomics so that tests can shorten them on a running server.
type callLimits struct {
	maxAnonymousCalls     atomic.Int64
	anonymousCallTimeout  atomic.Int64
	maxAnonymousConns     atomic.Int64
	anonymousConnLifetime atomic.Int64
	maxClusterCalls       atomic.Int64

	anonymousConns atomic.Int64
	// bounds count the refusals in relay_stream_limits_exceeded_total
	// and log them at their limited rate; nil in tests that need neither.
	bounds *agentBounds

	mu             sync.Mutex
	anonymousCalls int64
	clusterCalls   map[string]int64
}

func newCallLimits(maxStreamsPerCluster int, bounds *agentBounds) *callLimits {
	l := &callLimits{clusterCalls: map[string]int64{}, bounds: bounds}
	l.maxAnonymousCalls.Store(defaultMaxAnonymousCalls)
	l.anonymousCallTimeout.Store(int64(defaultAnonymousCallTimeout))
	l.maxAnonymousConns.Store(defaultMaxAnonymousConns)
	l.anonymousConnLifetime.Store(int64(defaultAnonymousConnLifetime))
	l.maxClusterCalls.Store(int64(maxStreamsPerCluster + clusterCallsBeyondStreams))
	return l
}

// tap is the server's tap.ServerInHandle: it runs when a call's headers
// have arrived, before gRPC reads its message or starts its handler. It
// refuses a call beyond its caller's bound (the client sees the status at
// once, and the call costs nothing more), counts the call until its stream
// ends, and gives a call without a client certificate a deadline.
func (l *callLimits) tap(ctx context.Context, _ *tap.Info) (context.Context, error) {
	cluster, ok := tapCluster(ctx)
	if !ok {
		l.mu.Lock()
		if l.anonymousCalls >= l.maxAnonymousCalls.Load() {
			l.mu.Unlock()
			l.refused(limitAnonymousCalls, "refused a call without a client certificate: the most such calls are in flight", "peer", peerHost(ctx), "limit", l.maxAnonymousCalls.Load())
			return nil, status.Error(codes.ResourceExhausted, "relay-server has too many calls without a client certificate in flight: retry with backoff")
		}
		l.anonymousCalls++
		l.mu.Unlock()
		ctx, cancel := context.WithTimeout(ctx, time.Duration(l.anonymousCallTimeout.Load()))
		context.AfterFunc(ctx, func() {
			cancel()
			l.mu.Lock()
			l.anonymousCalls--
			l.mu.Unlock()
		})
		return ctx, nil
	}
	l.mu.Lock()
	if l.clusterCalls[cluster] >= l.maxClusterCalls.Load() {
		l.mu.Unlock()
		l.refused(limitClusterCalls, "refused a call: the cluster has the most calls in flight it may", "cluster", cluster, "limit", l.maxClusterCalls.Load())
		return nil, status.Errorf(codes.ResourceExhausted, "cluster %s has %d calls in flight, the most relay-server allows one cluster: close the streams it does not use", cluster, l.maxClusterCalls.Load())
	}
	l.clusterCalls[cluster]++
	l.mu.Unlock()
	context.AfterFunc(ctx, func() {
		l.mu.Lock()
		if l.clusterCalls[cluster]--; l.clusterCalls[cluster] <= 0 {
			delete(l.clusterCalls, cluster)
		}
		l.mu.Unlock()
	})
	return ctx, nil
}

// refused counts a refusal under limit and logs msg at the bounds' rate.
func (l *callLimits) refused(limit, msg string, keysAndValues ...any) {
	if l.bounds == nil {
		return
	}
	l.bounds.exceeded.WithLabelValues(limit).Inc()
	l.bounds.logLimited(msg, keysAndValues...)
}

// inFlight returns the calls counted: without a client certificate, and
// of cluster.
func (l *callLimits) inFlight(cluster string) (anonymous, ofCluster int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.anonymousCalls, l.clusterCalls[cluster]
}

// tapCluster returns the cluster the caller's verified client certificate
// names; false for a connection without one.
func tapCluster(ctx context.Context) (string, bool) {
	info, ok := authInfo(ctx).(grpccreds.TLSInfo)
	if !ok || len(info.State.VerifiedChains) == 0 || len(info.State.VerifiedChains[0]) == 0 {
		return "", false
	}
	name, err := pki.ClientIdentity(info.State.VerifiedChains[0][0])
	if err != nil {
		return "", false
	}
	return name, true
}

// admitAnonymous takes a slot for conn, whose handshake showed no client
// certificate, and returns it wrapped so that closing it gives the slot
// back; the connection is closed after anonymousConnLifetime. With no slot
// free it closes conn and returns an error.
func (l *callLimits) admitAnonymous(conn net.Conn) (net.Conn, error) {
	if l.anonymousConns.Add(1) > l.maxAnonymousConns.Load() {
		l.anonymousConns.Add(-1)
		l.refused(limitAnonymousConnection, "closed a connection without a client certificate after its handshake: the most such connections are open", "peer", conn.RemoteAddr().String(), "limit", l.maxAnonymousConns.Load())
		_ = conn.Close()
		return nil, errTooManyAnonymousConns
	}
	a := &anonymousConn{Conn: conn, release: func() { l.anonymousConns.Add(-1) }}
	a.timer = time.AfterFunc(time.Duration(l.anonymousConnLifetime.Load()), func() { _ = a.Close() })
	return a, nil
}

var errTooManyAnonymousConns = errors.New("too many connections without a client certificate: closed after the handshake")

// anonymousConn is a connection without a client certificate, holding one
// of callLimits' slots until it is closed.
type anonymousConn struct {
	net.Conn
	release func()
	timer   *time.Timer
	once    sync.Once
}

func (a *anonymousConn) Close() error {
	err := a.Conn.Close()
	a.once.Do(func() {
		a.timer.Stop()
		a.release()
	})
	return err
}
