package agent

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	relayv1 "github.com/meshrelay/meshrelay/relay/api/v1"
)

// certificateReminder is how often a session waiting for a client
// certificate says so.
const certificateReminder = 30 * time.Second

// errHandover ends serve when the provider holds another client
// certificate than the one the link's connection was made with.
var errHandover = errors.New("the client certificate changed")

// handoverRetry bounds how long a failed handover waits before it is tried
// again, while the streams stay on the connection they have;
// firstMessageWait how long a new connection's Connect or pull stream may
// take to bring its first message (the trust bundle).
const (
	handoverRetry    = 10 * time.Second
	firstMessageWait = 30 * time.Second
)

// The shapes of a link's streams, as logged: one Connect stream, or a push
// and a pull stream with a server that predates Connect.
const (
	shapeConnect  = "connect"
	shapePushPull = "push+pull"
)

// link is one connection's streams: a Connect stream, or a push and a pull
// stream.
type link struct {
	conn   *grpc.ClientConn
	cancel context.CancelFunc
	shape  string
	// send sends a message to the server on the Connect or push stream;
	// serve is its one caller. A failed send ends that stream and returns
	// why, naming it.
	send func(*relayv1.PushMessage) error
	// leaf is the client certificate the connection was made with (nil
	// in insecure mode); on is the server it reached.
	leaf *x509.Certificate
	on   connection
	// errc receives the end of the stream that brings the instructions
	// (Connect or pull).
	errc chan error
}

func (l *link) close() {
	l.cancel()
	l.conn.Close()
}

// session runs the streams until they end. When the provider holds a
// renewed certificate, it makes a new connection with it, opens the
// streams there and only then closes the old connection, so that the
// agent's streams never drop for a renewal, and the old certificate (soon
// expired, or under a root that is leaving) is no longer in use. A
// handover that fails leaves the streams where they are and is tried
// again.
func (s *streams) session(ctx context.Context) error {
	o := &s.opts
	if err := s.awaitCertificate(ctx); err != nil {
		return err
	}
	cur, err := s.open(ctx)
	if err != nil {
		return err
	}
	defer func() { cur.close() }()
	// A Connect stream carries what the push and the pull stream carry.
	o.Connected.WithLabelValues("push").Set(1)
	o.Connected.WithLabelValues("pull").Set(1)
	defer o.Connected.WithLabelValues("push").Set(0)
	defer o.Connected.WithLabelValues("pull").Set(0)
	o.Log.Info("connected to relay server", "server", o.Config.ServerAddress)
	o.Log.V(1).Info("relay streams open", "stream", cur.shape)
	var retry <-chan time.Time
	for {
		err := s.serve(ctx, cur, retry)
		if !errors.Is(err, errHandover) {
			return err
		}
		next, err := s.open(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			o.Log.Error(err, "could not move the streams to a connection with the renewed client certificate; they stay on the current one", "retryIn", handoverRetry)
			retry = o.Clock.After(handoverRetry)
			continue
		}
		cur.close()
		cur, retry = next, nil
		if o.Handovers != nil {
			o.Handovers.Inc()
		}
		o.Log.Info("moved the streams to a connection made with the renewed client certificate")
		o.Log.V(1).Info("relay streams open", "stream", cur.shape)
	}
}

// open dials the server with the provider's current certificate and opens
// the streams there: a Connect stream, or Push and Pull when the server
// answers Connect with Unimplemented (it predates Connect; each open asks
// again, so a server upgraded meanwhile is used). It sends the status and
// waits for the first instruction, which proves the connection works.
func (s *streams) open(ctx context.Context) (*link, error) {
	o := &s.opts
	var leaf *x509.Certificate
	provider := o.Provider
	if cert := o.Provider.Current(); cert != nil {
		// The connection presents this certificate at every handshake, so
		// that leaf is the one the server holds: the provider may change
		// while the connection opens (moved compares with leaf).
		leaf, provider = cert.Leaf, fixedProvider(cert)
	}
	conn, err := dial(o.Config, o.Roots.Get, provider)
	if err != nil {
		return nil, err
	}
	lctx, cancel := context.WithCancel(withCluster(ctx, o.Config))
	l := &link{conn: conn, cancel: cancel, leaf: leaf, errc: make(chan error, 1)}
	err = s.openConnect(ctx, lctx, l)
	if errors.Is(err, errNoConnect) {
		o.Log.Info("the relay server does not serve Connect (an older relay-server); the agent uses Push and Pull", "server", o.Config.ServerAddress)
		err = s.openPushPull(ctx, lctx, l)
	}
	if err != nil {
		l.close()
		return nil, err
	}
	return l, nil
}

// errNoConnect is openConnect's error when the server answers Connect with
// Unimplemented.
var errNoConnect = errors.New("the relay server does not serve Connect")

// openConnect opens l's Connect stream in lctx, sends the status on it and
// handles the first instruction; then a goroutine receives the rest. It
// returns errNoConnect, having closed the stream, when the server answers
// Unimplemented. Instructions are handled in ctx.
func (s *streams) openConnect(ctx, lctx context.Context, l *link) error {
	cctx, cancel := context.WithCancel(lctx)
	fail := func(what string, err error) error {
		cancel()
		if status.Code(err) == codes.Unimplemented {
			return errNoConnect
		}
		return fmt.Errorf("%s: %w", what, err)
	}
	stream, err := relayv1.NewRelayClient(l.conn).Connect(cctx)
	if err != nil {
		return fail("failed to open connect stream", err)
	}
	// A send the server ended returns io.EOF; its status, Unimplemented
	// among them, comes to Recv.
	if err := stream.Send(s.status()); err != nil && !errors.Is(err, io.EOF) {
		return fail("failed to send status on connect stream", err)
	}
	first, err := firstInstruction(stream.Recv, cancel)
	if err != nil {
		return fail("connect stream", err)
	}
	l.shape = shapeConnect
	l.send = func(msg *relayv1.PushMessage) error {
		err := stream.Send(msg)
		if err == nil {
			return nil
		}
		_ = stream.CloseSend()
		if errors.Is(err, io.EOF) {
			// The server ended the stream: the receiving goroutine has
			// its status, or is about to.
			select {
			case err := <-l.errc:
				return err
			case <-ctx.Done():
			}
		}
		return fmt.Errorf("connect stream: %w", err)
	}
	l.on = connection{server: serverChain(stream.Context())}
	s.handle(ctx, first, l.on)
	go s.receive(ctx, l, "connect stream", stream.Recv)
	return nil
}

// openPushPull opens l's push stream in lctx and sends the status, then
// opens the pull stream and handles its first instruction; then a
// goroutine receives the rest. Instructions are handled in ctx.
func (s *streams) openPushPull(ctx, lctx context.Context, l *link) error {
	client := relayv1.NewRelayClient(l.conn)
	push, err := client.Push(lctx)
	if err != nil {
		return fmt.Errorf("failed to open push stream: %w", err)
	}
	if err := push.Send(s.status()); err != nil {
		return fmt.Errorf("failed to send status: %w", err)
	}
	pull, err := client.Pull(lctx, &relayv1.PullRequest{Replica: s.opts.Replica})
	if err != nil {
		return fmt.Errorf("failed to open pull stream: %w", err)
	}
	first, err := firstInstruction(pull.Recv, l.cancel)
	if err != nil {
		return fmt.Errorf("pull stream: %w", err)
	}
	l.shape = shapePushPull
	l.send = func(msg *relayv1.PushMessage) error {
		err := push.Send(msg)
		if err == nil {
			return nil
		}
		// The push stream's status says why it ended.
		if _, cerr := push.CloseAndRecv(); cerr != nil {
			err = cerr
		}
		return fmt.Errorf("push stream: %w", err)
	}
	l.on = connection{server: serverChain(pull.Context())}
	s.handle(ctx, first, l.on)
	go s.receive(ctx, l, "pull stream", pull.Recv)
	return nil
}

// firstInstruction returns the first instruction that recv brings. A
// server that accepts the streams and never answers must not hold a
// handover (the live connection waits meanwhile) or a connect: after
// firstMessageWait, it calls cancel, which ends the stream, and fails.
func firstInstruction(recv func() (*relayv1.Instruction, error), cancel context.CancelFunc) (*relayv1.Instruction, error) {
	quiet := time.AfterFunc(firstMessageWait, cancel)
	in, err := recv()
	if !quiet.Stop() {
		return nil, fmt.Errorf("no first message within %s", firstMessageWait)
	}
	return in, err
}

// receive handles the instructions that recv brings, on l's connection and
// in ctx, until the stream ends; then it sends why to l.errc, naming the
// stream.
func (s *streams) receive(ctx context.Context, l *link, stream string, recv func() (*relayv1.Instruction, error)) {
	for {
		in, err := recv()
		if err != nil {
			l.errc <- fmt.Errorf("%s: %w", stream, err)
			return
		}
		s.handle(ctx, in, l.on)
	}
}

// serve sends l's messages to the server (this goroutine is l.send's one
// caller) until the stream that brings the instructions ends, a send
// fails, ctx ends, or the provider holds another certificate than l's
// (errHandover); retry, when it fires, asks again for a handover that
// failed.
func (s *streams) serve(ctx context.Context, l *link, retry <-chan time.Time) error {
	o := &s.opts
	for {
		// The channel first, then the certificate: a change after this
		// closes the channel, and one before it (while the link opened, or
		// a message was sent) is seen here. A handover that failed waits
		// for retry, or for another certificate.
		changed := o.Provider.Changed()
		if retry == nil && s.moved(l) {
			return errHandover
		}
		var msg *relayv1.PushMessage
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-l.errc:
			return err
		case <-retry:
			return errHandover
		case <-changed:
			if s.moved(l) {
				return errHandover
			}
			msg = s.status()
		case <-o.StatusDirty:
			msg = s.status()
		case msg = <-o.PushOut:
		}
		if err := l.send(msg); err != nil {
			return err
		}
	}
}

// moved reports whether the provider holds another certificate than the
// one l's connection was made with.
func (s *streams) moved(l *link) bool {
	cert := s.opts.Provider.Current()
	return cert != nil && cert.Leaf != nil && l.leaf != nil && !cert.Leaf.Equal(l.leaf)
}

// awaitCertificate returns when the provider holds a client certificate
// (at once in insecure mode), saying every certificateReminder that it
// waits, or with ctx's error when ctx ends first.
func (s *streams) awaitCertificate(ctx context.Context) error {
	o := &s.opts
	for !o.Config.Insecure {
		if cert := o.Provider.Current(); cert != nil {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-o.Provider.Changed():
		case <-o.Clock.After(certificateReminder):
			o.Log.Info("waiting for a client certificate", "secret", o.ClientSecret.String())
		}
	}
	return nil
}

// serverChain returns the certificates the relay server presented on the
// connection of a stream's context, its certificate first; nil in insecure
// mode.
func serverChain(ctx context.Context) []*x509.Certificate {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return nil
	}
	return info.State.PeerCertificates
}
