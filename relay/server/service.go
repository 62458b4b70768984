package server

import (
	"context"
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
	reasonRevoked      = "revoked"
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
	kc, err := s.registered(ctx, req.GetCluster())
	if err != nil {
		return nil, s.refuse(log, call, reasonUnregistered, err)
	}
	return s.sign(log, call, kc, req.GetCsr())
}

// Renew signs a CSR for the caller's own cluster, over mTLS.
func (s *service) Renew(ctx context.Context, req *relayv1.RenewRequest) (*relayv1.CertificateResponse, error) {
	const call = "renew"
	who, err := callerOf(ctx, s.cfg.Insecure)
	if err != nil {
		return nil, s.refuse(s.log.WithValues("call", call), call, reasonToken, err)
	}
	cluster := who.cluster
	log := s.log.WithValues("call", call, "cluster", cluster, "peer", peerHost(ctx))
	release, err := s.limiter.acquire(peerHost(ctx))
	if err != nil {
		return nil, s.refuse(log, call, reasonOverload, err)
	}
	defer release()
	if len(req.GetCsr()) > maxCSRBytes {
		return nil, s.refuse(log, call, reasonBadRequest, status.Errorf(codes.InvalidArgument, "CSR too large: at most %d bytes", maxCSRBytes))
	}
	kc, err := s.registered(ctx, cluster)
	if err != nil {
		return nil, s.refuse(log, call, reasonUnregistered, err)
	}
	if err := s.admit(kc, who); err != nil {
		return nil, s.refuse(log, call, reasonRevoked, err)
	}
	return s.sign(log, call, kc, req.GetCsr())
}

// sign signs csr for the registered cluster kc.
func (s *service) sign(log logr.Logger, call string, kc *meshv1alpha1.KubernetesCluster, csr []byte) (*relayv1.CertificateResponse, error) {
	cluster := kc.Name
	if s.cfg.DisableCa {
		return nil, s.refuse(log, call, reasonUnavailable, status.Error(codes.FailedPrecondition,
			"this server's CA is disabled (disableCa): give the agent its client certificate in relay-client-tls-secret, for example with cert-manager"))
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

// registered returns cluster's KubernetesCluster, or PermissionDenied
// when it has none.
func (s *service) registered(ctx context.Context, cluster string) (*meshv1alpha1.KubernetesCluster, error) {
	var kc meshv1alpha1.KubernetesCluster
	err := s.reader.Get(ctx, types.NamespacedName{Namespace: s.cfg.Namespace, Name: cluster}, &kc)
	switch {
	case apierrors.IsNotFound(err):
		return nil, status.Errorf(codes.PermissionDenied, "cluster %s is not registered: create KubernetesCluster %s in %s", cluster, cluster, s.cfg.Namespace)
	case err != nil:
		return nil, status.Errorf(codes.Unavailable, "failed to look up KubernetesCluster %s: %v", cluster, err)
	case kc.DeletionTimestamp != nil:
		return nil, status.Errorf(codes.PermissionDenied, "cluster %s is being deregistered", cluster)
	}
	return &kc, nil
}

func (s *service) tokenKey() types.NamespacedName {
	return s.cfg.TokenSecret.NamespacedName(s.cfg.Namespace)
}
