package agent

import (
	"context"
	"fmt"
	"time"

	"github.com/meshrelay/meshrelay/pkg/pki"
	"github.com/meshrelay/meshrelay/pkg/version"
	relayv1 "github.com/meshrelay/meshrelay/relay/api/v1"
)

// stream keeps the push and pull streams open, reconnecting with backoff
// and jitter. Each connection's handshakes take the provider's current
// certificate; a rotation does not close an open connection.
func (a *Agent) stream(ctx context.Context) error {
	log := a.log.WithName("client")
	retry := newBackoff(500*time.Millisecond, 30*time.Second)
	for {
		start := time.Now()
		err := a.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if time.Since(start) > time.Minute {
			retry = newBackoff(500*time.Millisecond, 30*time.Second)
		}
		d := retry.Step()
		log.Info("relay connection ended; reconnecting", "error", fmt.Sprint(err), "in", d.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(d):
		}
	}
}

// session runs one connection's push and pull streams until one ends.
func (a *Agent) session(ctx context.Context) error {
	for !a.cfg.Insecure {
		if cert := a.provider.Current(); cert != nil {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-a.provider.Changed():
		case <-time.After(30 * time.Second):
			a.log.Info("waiting for a client certificate", "secret", a.secrets.client.String())
		}
	}
	conn, err := dial(a.cfg, a.currentRoots(), a.provider)
	if err != nil {
		return err
	}
	defer conn.Close()
	rc := relayv1.NewRelayClient(conn)
	sctx, cancel := context.WithCancel(withCluster(ctx, a.cfg))
	defer cancel()

	push, err := rc.Push(sctx)
	if err != nil {
		return fmt.Errorf("failed to open push stream: %w", err)
	}
	if err := push.Send(a.status()); err != nil {
		return fmt.Errorf("failed to send status: %w", err)
	}
	pull, err := rc.Pull(sctx, &relayv1.PullRequest{Replica: a.opts.Replica})
	if err != nil {
		return fmt.Errorf("failed to open pull stream: %w", err)
	}
	// The pull stream's first message proves the whole connection works.
	first, err := pull.Recv()
	if err != nil {
		return fmt.Errorf("pull stream: %w", err)
	}
	a.metrics.connected.WithLabelValues("push").Set(1)
	a.metrics.connected.WithLabelValues("pull").Set(1)
	defer a.metrics.connected.WithLabelValues("push").Set(0)
	defer a.metrics.connected.WithLabelValues("pull").Set(0)
	a.log.Info("connected to relay server", "server", a.cfg.ServerAddress)
	a.handle(sctx, first)

	errc := make(chan error, 2)
	go func() {
		for {
			in, err := pull.Recv()
			if err != nil {
				errc <- fmt.Errorf("pull stream: %w", err)
				return
			}
			a.handle(sctx, in)
		}
	}()
	// One goroutine sends on the push stream: gRPC streams take one sender.
	go func() {
		for {
			var msg *relayv1.PushMessage
			select {
			case <-sctx.Done():
				return
			case <-a.provider.Changed():
				msg = a.status()
			case <-a.statusDirty:
				msg = a.status()
			case msg = <-a.pushOut:
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

// handle acts on one instruction from the server.
func (a *Agent) handle(ctx context.Context, in *relayv1.Instruction) {
	switch {
	case in.GetTrustBundle() != nil:
		roots, err := pki.DecodeCertificates(in.GetTrustBundle().GetCaCertificates())
		if err != nil {
			a.log.Info("ignored a bad trust bundle from the server", "error", err.Error())
			return
		}
		a.setRoots(roots)
	case in.GetRenewNow() != nil:
		select {
		case a.renewNow <- in.GetRenewNow().GetReason():
		default:
		}
	case in.GetIssueIntermediate() != nil:
		a.handleIssue(in.GetIssueIntermediate())
	case in.GetIntermediateIssued() != nil:
		// Off the receive loop: writing cacerts and restarting pods take
		// API calls.
		go a.handleIssued(ctx, in.GetIntermediateIssued())
	}
}

func (a *Agent) status() *relayv1.PushMessage {
	st := &relayv1.AgentStatus{AgentVersion: version.Version, Replica: a.opts.Replica}
	if cert := a.provider.Current(); cert != nil {
		st.ClientCertificateNotAfter = cert.Leaf.NotAfter.Unix()
	}
	if a.istio != nil {
		st.IstioCa = a.istio.status()
	}
	return &relayv1.PushMessage{Message: &relayv1.PushMessage_Status{Status: st}}
}
