package server

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	relayv1 "github.com/meshrelay/meshrelay/relay/api/v1"
)

// openedStream is an authenticated, registered and recorded stream.
type openedStream struct {
	*stream
	cluster string
	conns   *connections
}

// openStream authenticates a stream's caller, checks its registration and
// records the stream. A dropped push or connect stream's connection is
// closed, which ends its Recv; a pull stream waits on dropped itself. out,
// for a connect stream, sends its instructions: it is woken when one is
// queued.
//
// The registration is checked again once the stream is recorded: an
// eviction (a revocation, a deregistration, a change of the admitted
// issuers) that ran between the first check and the recording walked the
// streams without this one, and the second check sees what it saw.
func (s *service) openStream(streamCtx context.Context, kind streamKind, out *sender) (*openedStream, error) {
	who, err := callerOf(streamCtx, s.cfg.Insecure)
	if err != nil {
		return nil, err
	}
	cluster := who.cluster
	chains := chainsOf(streamCtx)
	kc, err := s.registered(streamCtx, cluster)
	if err != nil {
		return nil, err
	}
	if err := s.admit(kc, who, chains); err != nil {
		return nil, err
	}
	if hook := afterAdmit.Load(); hook != nil {
		(*hook)(cluster, kind)
	}
	var closeConn func()
	if kind.pushes() {
		closeConn = connCloser(streamCtx)
	}
	st := newStream(kind, closeConn, who.cert, chains...)
	if out != nil {
		out.queue, out.failed, out.dropped = st.instructions, closeConn, st.wasDropped
		st.wake = out.wake
	}
	if open, recorded := s.conns.record(cluster, st, s.bounds.maxStreams); !recorded {
		return nil, s.bounds.refuseStream(open, cluster)
	}
	if err := s.admitRecorded(streamCtx, who, chains); err != nil {
		s.conns.close(cluster, st)
		return nil, err
	}
	if s.cfg.Insecure {
		s.log.Info("WARNING: insecure relay connection, no TLS and no authentication", "cluster", cluster, "stream", kind.String())
	}
	s.log.V(1).Info("stream opened", "cluster", cluster, "stream", kind.String())
	return &openedStream{stream: st, cluster: cluster, conns: s.conns}, nil
}

// afterAdmit, when set (by tests), runs between a stream's admission and
// its recording: where an eviction can slip in.
var afterAdmit atomic.Pointer[func(cluster string, kind streamKind)]

// admitRecorded is openStream's second check, once the stream is
// recorded: the cluster's KubernetesCluster as the cache holds it now and
// the admitted issuers as they are now. A refusal is counted as a stream
// ended.
func (s *service) admitRecorded(ctx context.Context, who *caller, chains [][]*x509.Certificate) error {
	kc, err := s.registered(ctx, who.cluster)
	if err == nil {
		err = s.admit(kc, who, chains)
	}
	if r := (*refusal)(nil); errors.As(err, &r) {
		s.clientRefused.WithLabelValues("stream", r.reason).Inc()
	}
	if err != nil {
		s.log.Info("closed a stream refused once recorded: its cluster changed while it opened", "cluster", who.cluster, "error", err.Error())
	}
	return err
}

func (o *openedStream) close() { o.conns.close(o.cluster, o.stream) }

// droppedStatus is what a dropped cluster's stream ends with, or an
// evicted stream's refusal.
func (o *openedStream) droppedStatus() error {
	if o.reason != nil {
		return o.reason
	}
	return status.Errorf(codes.PermissionDenied, "cluster %s was deregistered: register it again with a KubernetesCluster", o.cluster)
}

// Push receives the agent's status while it is connected.
func (s *service) Push(stream relayv1.Relay_PushServer) error {
	o, err := s.openStream(stream.Context(), pushStream, nil)
	if err != nil {
		return err
	}
	defer o.close()
	received, err := s.receive(o, stream.Recv)
	if errors.Is(err, io.EOF) {
		return stream.SendAndClose(&relayv1.PushSummary{Received: received})
	}
	return err
}

// receive handles the agent's messages of a push or connect stream until
// the stream ends, and returns how many it received and why it ended
// (io.EOF: the agent closed its side). Recv runs on the handler's own
// goroutine: a dropped cluster's connection is closed (openStream), which
// ends it.
func (s *service) receive(o *openedStream, recv func() (*relayv1.PushMessage, error)) (int64, error) {
	var received int64
	for {
		msg, err := recv()
		if err != nil {
			if o.wasDropped() {
				return received, o.droppedStatus()
			}
			return received, err
		}
		received++
		if o.wasDropped() {
			// Evicted or deregistered while the message was on its way:
			// nothing the stream sends after that is handled.
			return received, o.droppedStatus()
		}
		if err := s.bounds.allowPush(o.cluster); err != nil {
			return received, err
		}
		s.handlePush(o.cluster, msg)
	}
}

// handlePush handles one message of cluster's push stream. It runs on the
// stream's receive loop and makes no API call: a CSR is answered on the
// pull streams, and what a RootTrustPolicy's status must show is left to
// the trust reconciler. A policy name becomes a label or a map key only
// when it names a RootTrustPolicy that applies to cluster: an intermediate
// CSR under any other name is ignored, and so is the name in an Istio CA
// report (the rest of the report stands: the server then asks for an
// intermediate under the policy that serves the cluster).
func (s *service) handlePush(cluster string, msg *relayv1.PushMessage) {
	if req := msg.GetIntermediateCsr(); req != nil {
		switch {
		case len(req.GetPolicy()) > maxShortField:
			s.bounds.ignore(cluster, ignoredOversized, "field", "intermediateCsr.policy")
		case !s.trust.State.applies(cluster, req.GetPolicy()):
			s.bounds.ignore(cluster, ignoredUnknownPolicy, "field", "intermediateCsr.policy", "policy", req.GetPolicy())
		default:
			s.trust.answer(cluster, req)
		}
		return
	}
	st := msg.GetStatus()
	if st == nil {
		return
	}
	if len(st.GetAgentVersion()) > maxVersionBytes || len(st.GetReplica()) > maxShortField {
		s.bounds.ignore(cluster, ignoredOversized, "field", "status")
		return
	}
	if na := st.GetClientCertificateNotAfter(); na > 0 {
		s.conns.setClientExpiry(cluster, na)
	}
	if sha := st.GetTrustBundleSha256(); sha != "" {
		if !isHexSHA256(sha) {
			s.bounds.ignore(cluster, ignoredMalformed, "field", "status.trustBundleSha256")
		} else {
			s.conns.setTrustBundle(cluster, sha)
		}
	}
	if v := st.GetAgentVersion(); v != "" {
		if !printableVersion(v) {
			s.bounds.ignore(cluster, ignoredMalformed, "field", "status.agentVersion")
		} else {
			s.conns.setAgentVersion(cluster, v)
		}
	}
	if ca := st.GetIstioCa(); ca != nil {
		if len(ca.GetPolicy()) > maxShortField || len(ca.GetRootSha256()) > 64 || len(ca.GetError()) > maxReasonBytes {
			s.bounds.ignore(cluster, ignoredOversized, "field", "status.istioCa")
			return
		}
		if p := ca.GetPolicy(); p != "" && !s.trust.State.applies(cluster, p) {
			s.bounds.ignore(cluster, ignoredUnknownPolicy, "field", "status.istioCa.policy", "policy", p)
			ca = &relayv1.IstioCAStatus{NotBefore: ca.GetNotBefore(), NotAfter: ca.GetNotAfter(), RootSha256: ca.GetRootSha256(), Error: ca.GetError()}
		}
		s.trust.report(cluster, ca)
	}
	s.log.V(1).Info("agent status", "cluster", cluster, "replica", st.GetReplica(), "version", st.GetAgentVersion(),
		"clientCertificateNotAfter", time.Unix(st.GetClientCertificateNotAfter(), 0).UTC())
}

// Pull sends the server's instructions while the agent is connected,
// starting with the trust bundle (firstInstruction).
func (s *service) Pull(req *relayv1.PullRequest, stream relayv1.Relay_PullServer) error {
	if len(req.GetReplica()) > maxShortField {
		return status.Errorf(codes.InvalidArgument, "replica name longer than %d bytes", maxShortField)
	}
	o, err := s.openStream(stream.Context(), pullStream, nil)
	if err != nil {
		return err
	}
	defer o.close()
	// A send the agent does not read within the send timeout closes the
	// connection, as a Connect stream's does (sender): an agent that
	// stops reading would otherwise hold this stream, counted as
	// connected, for good.
	timeout, closeConn := s.sendTimeout(), connCloser(stream.Context())
	if err := sendWithin(stream.Send, s.firstInstruction(), timeout, closeConn); err != nil {
		return fmt.Errorf("failed to send the trust bundle to %s: %w", o.cluster, err)
	}
	s.trust.check(o.cluster)
	done := stream.Context().Done()
	for {
		select {
		case <-done:
			return nil
		case <-o.dropped:
			return o.droppedStatus()
		case in := <-o.instructions:
			if err := sendWithin(stream.Send, in, timeout, closeConn); err != nil {
				return fmt.Errorf("failed to send instruction to %s: %w", o.cluster, err)
			}
		}
	}
}

// firstInstruction is a stream's first instruction: the trust bundle, or
// an empty instruction in insecure mode, where no bundle can be checked
// against the connection it came on (or before a root is loaded). The
// agent waits for a first message to know that the connection works, and
// ignores an instruction it does not know.
func (s *service) firstInstruction() *relayv1.Instruction {
	roots := s.keys.rootPEM.Load()
	if s.cfg.Insecure || roots == nil {
		return &relayv1.Instruction{}
	}
	return &relayv1.Instruction{Instruction: &relayv1.Instruction_TrustBundle{TrustBundle: &relayv1.TrustBundle{CaCertificates: *roots}}}
}

// Connect is Push and Pull on one stream: the handler's goroutine receives
// the agent's messages, and the stream's instructions, the trust bundle
// first, are sent by a goroutine that runs only while some are queued
// (sender), so that an idle agent holds one goroutine of its own here, not
// two.
func (s *service) Connect(stream relayv1.Relay_ConnectServer) error {
	out := &sender{send: stream.Send, timeout: s.sendTimeout()}
	// Held until the trust bundle is sent: an instruction queued as soon
	// as the stream is recorded waits for it.
	out.mu.Lock()
	fail := func(err error) error {
		out.stopped = true
		out.mu.Unlock()
		return err
	}
	o, err := s.openStream(stream.Context(), connectStream, out)
	if err != nil {
		return fail(err)
	}
	defer o.close()
	if err := sendWithin(stream.Send, s.firstInstruction(), out.timeout, out.fail); err != nil {
		return fail(fmt.Errorf("failed to send the trust bundle to %s: %w", o.cluster, err))
	}
	out.mu.Unlock()
	defer out.stop()
	s.trust.check(o.cluster)
	_, err = s.receive(o, stream.Recv)
	if sendErr := out.err(); sendErr != nil && !o.wasDropped() {
		return fmt.Errorf("failed to send instruction to %s: %w", o.cluster, sendErr)
	}
	if errors.Is(err, io.EOF) {
		return nil
	}
	return err
}

// RenewNow asks every connected agent of cluster to renew at once and
// returns how many pull and Connect streams took the instruction.
func (s *service) RenewNow(cluster, reason string) int {
	return s.conns.send(cluster, &relayv1.Instruction{Instruction: &relayv1.Instruction_RenewNow{RenewNow: &relayv1.RenewNow{Reason: reason}}})
}

// isHexSHA256 reports whether s is a SHA-256 in lowercase hex, as the
// agent's acknowledgement of a trust bundle must be.
func isHexSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, r := range s {
		if (r < '0' || r > '9') && (r < 'a' || r > 'f') {
			return false
		}
	}
	return true
}

// printableVersion reports whether v, an agent's version as it reports it,
// is printable ASCII: it is written into KubernetesCluster status, which an
// invalid string would keep failing to apply.
func printableVersion(v string) bool {
	for i := 0; i < len(v); i++ {
		if v[i] < 0x20 || v[i] > 0x7e {
			return false
		}
	}
	return true
}
