package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/go-logr/logr"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/pkg/pki"
	relayv1 "github.com/meshrelay/meshrelay/relay/api/v1"
)

// Bounds on request fields, as relay.proto documents them.
const (
	maxTokenBytes   = 4096
	maxCSRBytes     = 16 << 10
	maxShortField   = 253
	maxVersionBytes = 128
	maxReasonBytes  = 1024
	// maxMessageBytes bounds every gRPC message the server receives.
	maxMessageBytes = 64 << 10
)

// Refusal reasons in relay_certificates_refused_total.
const (
	reasonToken        = "token"
	reasonUnregistered = "unregistered"
	reasonBadRequest   = "bad_request"
	reasonUnavailable  = "unavailable"
	reasonOverload     = "overload"
)

// service implements the Relay gRPC API.
type service struct {
	relayv1.UnimplementedRelayServer

	cfg     *config.Server
	keys    *keyring
	reader  client.Reader
	limiter *signingLimiter
	conns   *connections
	trust   *trust
	metrics *metrics
	now     func() time.Time
	log     logr.Logger
}

var _ relayv1.RelayServer = (*service)(nil)

// Bootstrap trades the identity token and a CSR for a first client
// certificate.
func (s *service) Bootstrap(ctx context.Context, req *relayv1.BootstrapRequest) (*relayv1.CertificateResponse, error) {
	const call = "bootstrap"
	log := s.log.WithValues("call", call, "cluster", req.GetCluster(), "peer", peerHost(ctx))
	release, err := s.limiter.acquire(peerHost(ctx))
	if err != nil {
		return nil, s.refuse(log, call, reasonOverload, err)
	}
	defer release()
	if len(req.GetToken()) > maxTokenBytes || len(req.GetCsr()) > maxCSRBytes {
		return nil, s.refuse(log, call, reasonBadRequest, status.Errorf(codes.InvalidArgument, "token or CSR too large: at most %d and %d bytes", maxTokenBytes, maxCSRBytes))
	}
	if err := pki.CheckDNSLabel(req.GetCluster()); err != nil {
		return nil, s.refuse(log, call, reasonBadRequest, status.Errorf(codes.InvalidArgument, "cluster %v", err))
	}
	stored := s.keys.token.Load()
	if stored == nil {
		return nil, s.refuse(log, call, reasonUnavailable, status.Errorf(codes.Unavailable, "the server has no identity token loaded yet: check secret %s", s.tokenKey()))
	}
	if !tokensEqual([]byte(req.GetToken()), *stored) {
		return nil, s.refuse(log, call, reasonToken, status.Errorf(codes.Unauthenticated,
			"identity token does not match %s on the management cluster: copy it to the workload cluster again (relayctl register)", s.tokenKey()))
	}
	return s.sign(ctx, log, call, req.GetCluster(), req.GetCsr())
}

// Renew signs a CSR for the caller's own cluster, over mTLS.
func (s *service) Renew(ctx context.Context, req *relayv1.RenewRequest) (*relayv1.CertificateResponse, error) {
	const call = "renew"
	cluster, err := callerCluster(ctx, s.cfg.Insecure)
	if err != nil {
		return nil, s.refuse(s.log.WithValues("call", call), call, reasonToken, err)
	}
	log := s.log.WithValues("call", call, "cluster", cluster, "peer", peerHost(ctx))
	release, err := s.limiter.acquire(peerHost(ctx))
	if err != nil {
		return nil, s.refuse(log, call, reasonOverload, err)
	}
	defer release()
	if len(req.GetCsr()) > maxCSRBytes {
		return nil, s.refuse(log, call, reasonBadRequest, status.Errorf(codes.InvalidArgument, "CSR too large: at most %d bytes", maxCSRBytes))
	}
	return s.sign(ctx, log, call, cluster, req.GetCsr())
}

func (s *service) sign(ctx context.Context, log logr.Logger, call, cluster string, csr []byte) (*relayv1.CertificateResponse, error) {
	if s.cfg.DisableCa {
		return nil, s.refuse(log, call, reasonUnavailable, status.Error(codes.FailedPrecondition,
			"this server's CA is disabled (disableCa): give the agent its client certificate in relay-client-tls-secret, for example with cert-manager"))
	}
	if err := s.registered(ctx, cluster); err != nil {
		return nil, s.refuse(log, call, reasonUnregistered, err)
	}
	iss := s.keys.issuer.Load()
	if iss == nil {
		return nil, s.refuse(log, call, reasonUnavailable, status.Errorf(codes.Unavailable, "the server has no signing CA loaded yet: check secret %s", s.cfg.SigningTLSSecret.NamespacedName(s.cfg.Namespace)))
	}
	issued, err := iss.SignPEM(csr, pki.Identity{DNSNames: []string{cluster}}, s.now())
	if err != nil {
		return nil, s.refuse(log, call, reasonBadRequest, status.Errorf(codes.InvalidArgument, "%v", err))
	}
	s.metrics.issued.WithLabelValues(call).Inc()
	s.conns.setClientExpiry(cluster, issued.Cert.NotAfter.Unix())
	log.Info("issued client certificate", "serial", issued.Cert.SerialNumber.Text(16), "notAfter", issued.Cert.NotAfter)
	return &relayv1.CertificateResponse{CertificateChain: issued.CertPEM, CaCertificate: issued.CAPEM}, nil
}

// refuse counts a refusal, logs its detail and returns the status for the caller.
func (s *service) refuse(log logr.Logger, call, reason string, err error) error {
	s.metrics.refused.WithLabelValues(call, reason).Inc()
	log.Info("refused", "reason", reason, "error", err.Error())
	return err
}

// registered returns PermissionDenied unless cluster has a KubernetesCluster.
func (s *service) registered(ctx context.Context, cluster string) error {
	var kc meshv1alpha1.KubernetesCluster
	err := s.reader.Get(ctx, types.NamespacedName{Namespace: s.cfg.Namespace, Name: cluster}, &kc)
	switch {
	case apierrors.IsNotFound(err):
		return status.Errorf(codes.PermissionDenied, "cluster %s is not registered: create KubernetesCluster %s in %s", cluster, cluster, s.cfg.Namespace)
	case err != nil:
		return status.Errorf(codes.Unavailable, "failed to look up KubernetesCluster %s: %v", cluster, err)
	case kc.DeletionTimestamp != nil:
		return status.Errorf(codes.PermissionDenied, "cluster %s is being deregistered", cluster)
	}
	return nil
}

func (s *service) tokenKey() types.NamespacedName {
	return s.cfg.TokenSecret.NamespacedName(s.cfg.Namespace)
}

// openedStream is an authenticated, registered and recorded stream.
type openedStream struct {
	*stream
	cluster string
	conns   *connections
}

// openStream authenticates a stream's caller, checks its registration and
// records the stream. A dropped push stream's connection is closed, which
// ends its Recv; a pull stream waits on dropped itself.
func (s *service) openStream(streamCtx context.Context, kind streamKind) (*openedStream, error) {
	cluster, err := callerCluster(streamCtx, s.cfg.Insecure)
	if err != nil {
		return nil, err
	}
	if err := s.registered(streamCtx, cluster); err != nil {
		return nil, err
	}
	var closeConn func()
	if kind == pushStream {
		closeConn = connCloser(streamCtx)
	}
	st := s.conns.open(cluster, kind, closeConn)
	if s.cfg.Insecure {
		s.log.Info("WARNING: insecure relay connection, no TLS and no authentication", "cluster", cluster, "stream", kind.String())
	}
	s.log.V(1).Info("stream opened", "cluster", cluster, "stream", kind.String())
	return &openedStream{stream: st, cluster: cluster, conns: s.conns}, nil
}

func (o *openedStream) close() { o.conns.close(o.cluster, o.stream) }

// droppedStatus is what a dropped cluster's stream ends with.
func (o *openedStream) droppedStatus() error {
	return status.Errorf(codes.PermissionDenied, "cluster %s was deregistered: register it again with a KubernetesCluster", o.cluster)
}

// Push receives the agent's status while it is connected.
func (s *service) Push(stream relayv1.Relay_PushServer) error {
	o, err := s.openStream(stream.Context(), pushStream)
	if err != nil {
		return err
	}
	defer o.close()
	// Recv runs on the handler's own goroutine: a dropped cluster's
	// connection is closed (openStream), which ends it.
	var received int64
	for {
		msg, err := stream.Recv()
		if err != nil {
			switch {
			case o.wasDropped():
				return o.droppedStatus()
			case errors.Is(err, io.EOF):
				return stream.SendAndClose(&relayv1.PushSummary{Received: received})
			}
			return err
		}
		received++
		s.handlePush(o.cluster, msg)
	}
}

// handlePush handles one message of cluster's push stream. It runs on the
// stream's receive loop and makes no API call: a CSR is answered on the
// pull streams, and what a RootTrustPolicy's status must show is left to
// the trust reconciler.
func (s *service) handlePush(cluster string, msg *relayv1.PushMessage) {
	if req := msg.GetIntermediateCsr(); req != nil {
		if len(req.GetPolicy()) > maxShortField {
			s.log.Info("ignored an intermediate CSR with an oversized policy name", "cluster", cluster)
			return
		}
		s.trust.answer(cluster, req)
		return
	}
	if st := msg.GetStatus(); st != nil {
		if len(st.GetAgentVersion()) > maxVersionBytes || len(st.GetReplica()) > maxShortField {
			s.log.Info("ignored oversized agent status", "cluster", cluster)
			return
		}
		if na := st.GetClientCertificateNotAfter(); na > 0 {
			s.conns.setClientExpiry(cluster, na)
		}
		if ca := st.GetIstioCa(); ca != nil {
			if len(ca.GetPolicy()) > maxShortField || len(ca.GetRootSha256()) > 64 || len(ca.GetError()) > maxReasonBytes {
				s.log.Info("ignored an oversized Istio CA report", "cluster", cluster)
				return
			}
			s.trust.report(cluster, ca)
		}
		s.log.V(1).Info("agent status", "cluster", cluster, "replica", st.GetReplica(), "version", st.GetAgentVersion(),
			"clientCertificateNotAfter", time.Unix(st.GetClientCertificateNotAfter(), 0).UTC())
	}
}

// Pull sends the server's instructions while the agent is connected,
// starting with the trust bundle.
func (s *service) Pull(req *relayv1.PullRequest, stream relayv1.Relay_PullServer) error {
	if len(req.GetReplica()) > maxShortField {
		return status.Errorf(codes.InvalidArgument, "replica name longer than %d bytes", maxShortField)
	}
	o, err := s.openStream(stream.Context(), pullStream)
	if err != nil {
		return err
	}
	defer o.close()
	if roots := s.keys.rootPEM.Load(); roots != nil {
		if err := stream.Send(&relayv1.Instruction{Instruction: &relayv1.Instruction_TrustBundle{TrustBundle: &relayv1.TrustBundle{CaCertificates: *roots}}}); err != nil {
			return err
		}
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
			if err := stream.Send(in); err != nil {
				return fmt.Errorf("failed to send instruction to %s: %w", o.cluster, err)
			}
		}
	}
}

// RenewNow asks every connected agent of cluster to renew at once and
// returns how many pull streams took the instruction.
func (s *service) RenewNow(cluster, reason string) int {
	return s.conns.send(cluster, &relayv1.Instruction{Instruction: &relayv1.Instruction_RenewNow{RenewNow: &relayv1.RenewNow{Reason: reason}}})
}
