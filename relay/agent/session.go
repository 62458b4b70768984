package agent

import (
	"context"
	"crypto/x509"
	"fmt"
	"time"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	relayv1 "github.com/meshrelay/meshrelay/relay/api/v1"
)

// certificateReminder is how often a session waiting for a client
// certificate says so.
const certificateReminder = 30 * time.Second

// session runs one connection's push and pull streams until one ends.
func (s *streams) session(ctx context.Context) error {
	o := &s.opts
	if err := s.awaitCertificate(ctx); err != nil {
		return err
	}
	conn, err := dial(o.Config, o.Roots.Get, o.Provider)
	if err != nil {
		return err
	}
	defer conn.Close()
	rc := relayv1.NewRelayClient(conn)
	sctx, cancel := context.WithCancel(withCluster(ctx, o.Config))
	defer cancel()

	push, err := rc.Push(sctx)
	if err != nil {
		return fmt.Errorf("failed to open push stream: %w", err)
	}
	if err := push.Send(s.status()); err != nil {
		return fmt.Errorf("failed to send status: %w", err)
	}
	pull, err := rc.Pull(sctx, &relayv1.PullRequest{Replica: o.Replica})
	if err != nil {
		return fmt.Errorf("failed to open pull stream: %w", err)
	}
	// The pull stream's first message proves the whole connection works.
	first, err := pull.Recv()
	if err != nil {
		return fmt.Errorf("pull stream: %w", err)
	}
	o.Connected.WithLabelValues("push").Set(1)
	o.Connected.WithLabelValues("pull").Set(1)
	defer o.Connected.WithLabelValues("push").Set(0)
	defer o.Connected.WithLabelValues("pull").Set(0)
	o.Log.Info("connected to relay server", "server", o.Config.ServerAddress)
	on := connection{server: serverChain(pull.Context())}
	s.handle(sctx, first, on)

	errc := make(chan error, 2)
	go func() {
		for {
			in, err := pull.Recv()
			if err != nil {
				errc <- fmt.Errorf("pull stream: %w", err)
				return
			}
			s.handle(sctx, in, on)
		}
	}()
	// One goroutine sends on the push stream: gRPC streams take one sender.
	go func() {
		for {
			var msg *relayv1.PushMessage
			select {
			case <-sctx.Done():
				return
			case <-o.Provider.Changed():
				msg = s.status()
			case <-o.StatusDirty:
				msg = s.status()
			case msg = <-o.PushOut:
			}
			if err := push.Send(msg); err != nil {
				_, err = push.CloseAndRecv()
				errc <- fmt.Errorf("push stream: %w", err)
				return
			}
		}
	}()
	return <-errc
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
