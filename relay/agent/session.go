package agent

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

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
// firstMessageWait how long a new connection's pull stream may take to
// bring its first message (the trust bundle).
const (
	handoverRetry    = 10 * time.Second
	firstMessageWait = 30 * time.Second
)

// link is one connection's push and pull streams.
type link struct {
	conn   *grpc.ClientConn
	cancel context.CancelFunc
	push   relayv1.Relay_PushClient
	// leaf is the client certificate the connection was made with (nil
	// in insecure mode); on is the server it reached.
	leaf *x509.Certificate
	on   connection
	// errc receives the pull stream's end.
	errc chan error
}

func (l *link) close() {
	l.cancel()
	l.conn.Close()
}

// session runs the push and pull streams until they end. When the
// provider holds a renewed certificate, it makes a new connection with it,
// opens the streams there and only then closes the old connection, so that
// the agent's streams never drop for a renewal, and the old certificate
// (soon expired, or under a root that is leaving) is no longer in use. A
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
	o.Connected.WithLabelValues("push").Set(1)
	o.Connected.WithLabelValues("pull").Set(1)
	defer o.Connected.WithLabelValues("push").Set(0)
	defer o.Connected.WithLabelValues("pull").Set(0)
	o.Log.Info("connected to relay server", "server", o.Config.ServerAddress)
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
	}
}

// open dials the server with the provider's current certificate, opens
// the push and pull streams, sends the status and waits for the pull
// stream's first message, which proves the connection works.
func (s *streams) open(ctx context.Context) (*link, error) {
	o := &s.opts
	var leaf *x509.Certificate
	if cert := o.Provider.Current(); cert != nil {
		leaf = cert.Leaf
	}
	conn, err := dial(o.Config, o.Roots.Get, o.Provider)
	if err != nil {
		return nil, err
	}
	lctx, cancel := context.WithCancel(withCluster(ctx, o.Config))
	l := &link{conn: conn, cancel: cancel, leaf: leaf, errc: make(chan error, 1)}
	fail := func(err error) (*link, error) {
		l.close()
		return nil, err
	}
	if l.push, err = relayv1.NewRelayClient(conn).Push(lctx); err != nil {
		return fail(fmt.Errorf("failed to open push stream: %w", err))
	}
	if err := l.push.Send(s.status()); err != nil {
		return fail(fmt.Errorf("failed to send status: %w", err))
	}
	pull, err := relayv1.NewRelayClient(conn).Pull(lctx, &relayv1.PullRequest{Replica: o.Replica})
	if err != nil {
		return fail(fmt.Errorf("failed to open pull stream: %w", err))
	}
	// A server that accepts the streams and never answers must not hold a
	// handover (the live connection waits meanwhile) or a connect.
	quiet := time.AfterFunc(firstMessageWait, cancel)
	first, err := pull.Recv()
	if !quiet.Stop() && err == nil {
		err = fmt.Errorf("no first message within %s", firstMessageWait)
	}
	if err != nil {
		return fail(fmt.Errorf("pull stream: %w", err))
	}
	l.on = connection{server: serverChain(pull.Context())}
	s.handle(ctx, first, l.on)
	go func() {
		for {
			in, err := pull.Recv()
			if err != nil {
				l.errc <- fmt.Errorf("pull stream: %w", err)
				return
			}
			s.handle(ctx, in, l.on)
		}
	}()
	return l, nil
}

// serve sends l's push messages (this goroutine is the push stream's one
// sender) until the pull stream ends, a send fails, ctx ends, or the
// provider holds another certificate than l's (errHandover); retry, when
// it fires, asks again for a handover that failed.
func (s *streams) serve(ctx context.Context, l *link, retry <-chan time.Time) error {
	o := &s.opts
	for {
		var msg *relayv1.PushMessage
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-l.errc:
			return err
		case <-retry:
			return errHandover
		case <-o.Provider.Changed():
			if s.moved(l) {
				return errHandover
			}
			msg = s.status()
		case <-o.StatusDirty:
			msg = s.status()
		case msg = <-o.PushOut:
		}
		if err := l.push.Send(msg); err != nil {
			_, err = l.push.CloseAndRecv()
			return fmt.Errorf("push stream: %w", err)
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
