package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"google.golang.org/grpc"

	relayv1 "github.com/meshrelay/meshrelay/relay/api/v1"
)

// streamShape is how a simulated agent holds its streams to relay-server,
// named as relay-agent logs it (relay/agent/session.go). relay-server
// counts a Connect stream as one push and one pull stream, so that
// relay_push_clients_connected and relay_pull_clients_connected count the
// agents whatever their shape.
type streamShape string

const (
	// connectShape is one Connect stream, which carries both directions:
	// what relay-agent opens.
	connectShape streamShape = "connect"
	// pushPullShape is a push and a pull stream: what an agent that
	// predates Connect opens.
	pushPullShape streamShape = "push+pull"
)

// describe says what an agent of shape s holds, for the phases' output.
func (s streamShape) describe() string {
	if s == pushPullShape {
		return "a push and a pull stream each, as an agent that predates Connect"
	}
	return "one Connect stream each, as relay-agent opens"
}

// streamShapes are the shapes the scale phase measures, in order
// (--scale-shapes).
type streamShapes []streamShape

// allShapes are the shapes the scale phase measures by default: Connect,
// then the push and pull streams it replaces. Connect comes first because
// the shape measured second has come out a few KiB per agent lower (its
// server starts with the clusters' status written by the first): this
// order does not flatter Connect.
var allShapes = streamShapes{connectShape, pushPullShape}

func (s *streamShapes) String() string {
	names := make([]string, len(*s))
	for i, sh := range *s {
		names[i] = string(sh)
	}
	return strings.Join(names, ",")
}

// Set takes a comma-separated list of shapes, each at most once.
func (s *streamShapes) Set(v string) error {
	var out streamShapes
	for _, name := range strings.Split(v, ",") {
		sh := streamShape(strings.TrimSpace(name))
		if !slices.Contains(allShapes, sh) {
			return fmt.Errorf("unknown stream shape %q: use %s", sh, allShapes.String())
		}
		if slices.Contains(out, sh) {
			return fmt.Errorf("stream shape %q named twice", sh)
		}
		out = append(out, sh)
	}
	*s = out
	return nil
}

// openStreams opens an agent's streams in shape on conn, in ctx, and sends
// its status st on the Connect or push stream (a pull stream's request
// names st's replica). It returns what receives the server's instructions,
// of which the first is the trust bundle: on the Connect stream, or on the
// pull stream.
func openStreams(ctx context.Context, conn grpc.ClientConnInterface, shape streamShape, st *relayv1.AgentStatus) (func() (*relayv1.Instruction, error), error) {
	rc := relayv1.NewRelayClient(conn)
	msg := &relayv1.PushMessage{Message: &relayv1.PushMessage_Status{Status: st}}
	switch shape {
	case connectShape:
		c, err := rc.Connect(ctx)
		if err != nil {
			return nil, fmt.Errorf("failed to open connect stream: %w", err)
		}
		// A send the server ended returns io.EOF; its status comes to
		// Recv.
		if err := c.Send(msg); err != nil && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("failed to send status on connect stream: %w", err)
		}
		return c.Recv, nil
	case pushPullShape:
		push, err := rc.Push(ctx)
		if err != nil {
			return nil, fmt.Errorf("failed to open push stream: %w", err)
		}
		if err := push.Send(msg); err != nil {
			return nil, fmt.Errorf("failed to send status: %w", err)
		}
		pull, err := rc.Pull(ctx, &relayv1.PullRequest{Replica: st.GetReplica()})
		if err != nil {
			return nil, fmt.Errorf("failed to open pull stream: %w", err)
		}
		return pull.Recv, nil
	}
	return nil, fmt.Errorf("unknown stream shape %q", shape)
}
