package server

import (
	"context"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
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
	reasonTokenUsed    = "token_used"
	reasonTokenExpired = "token_expired"
	reasonSharedToken  = "shared_token"
	reasonUnregistered = "unregistered"
	reasonBadRequest   = "bad_request"
	reasonUnavailable  = "unavailable"
	reasonOverload     = "overload"
	reasonRevoked      = "revoked"
)

// clusterUpdater writes a KubernetesCluster only if it is still at the
// resourceVersion it was read at (rawClusters).
type clusterUpdater interface {
	update(ctx context.Context, kc *meshv1alpha1.KubernetesCluster) error
}

// service implements the Relay gRPC API.
type service struct {
	relayv1.UnimplementedRelayServer

	cfg    *config.Server
	keys   *keyring
	reader client.Reader
	// api reads without the cache and clusters writes KubernetesClusters,
	// to consume bootstrap tokens with a conditional write.
	api      client.Reader
	clusters clusterUpdater
	limiter  *signingLimiter
	conns    *connections
	trust    *trust
	// bounds limit what one cluster's agent costs: push rate, open
	// streams, the names it may send.
	bounds *agentBounds
	// calls bounds what callers hold before their calls' handlers run
	// (calllimits.go).
	calls   *callLimits
	metrics *metrics
	// clock tells the time and waits (awaitRevocation).
	clock clock.Clock
	log   logr.Logger
	// clientRefused counts client certificates refused at the handshake
	// and streams ended (admission.go, eviction.go).
	clientRefused *prometheus.CounterVec
	// events records Events on KubernetesClusters; status writes this
	// replica's entry of their status. Either may be nil in tests that
	// build a service alone.
	events *clusterEvents
	status *statusWriter
}

// sendTimeout bounds one send of an instruction on a pull or Connect
// stream (sender.go).
func (s *service) sendTimeout() time.Duration {
	if s.bounds != nil {
		if d := time.Duration(s.bounds.sendTimeout.Load()); d > 0 {
			return d
		}
	}
	return sendTimeout
}

var _ relayv1.RelayServer = (*service)(nil)

// now is the time on s.clock.
func (s *service) now() time.Time { return s.clock.Now() }

// Bootstrap trades a bootstrap token and a CSR for a first client
// certificate: the cluster's own single-use token, or the shared identity
// token once per cluster (bootstraptoken.go).
func (s *service) Bootstrap(ctx context.Context, req *relayv1.BootstrapRequest) (*relayv1.CertificateResponse, error) {
	const call = callBootstrap
	// The caller is anonymous: its cluster name joins the log only once it
	// is a DNS label, and refusals are logged at a bounded rate (refuse).
	log := s.log.WithValues("call", call, "peer", peerHost(ctx))
	release, err := s.limiter.acquire(peerHost(ctx))
	if err != nil {
		return nil, s.refuse(log, call, reasonOverload, err)
	}
	defer release()
	if len(req.GetToken()) > maxTokenBytes || len(req.GetCsr()) > maxCSRBytes || len(req.GetCluster()) > maxClusterBytes {
		return nil, s.refuse(log, call, reasonBadRequest, status.Errorf(codes.InvalidArgument,
			"token, CSR or cluster name too large: at most %d, %d and %d bytes", maxTokenBytes, maxCSRBytes, maxClusterBytes))
	}
	if err := pki.CheckDNSLabel(req.GetCluster()); err != nil {
		return nil, s.refuse(log, call, reasonBadRequest, status.Errorf(codes.InvalidArgument, "cluster %v", err))
	}
	return s.bootstrap(ctx, log.WithValues("cluster", req.GetCluster()), req)
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
	release, err := s.limiter.acquireRenew(cluster)
	if err != nil {
		return nil, s.refuse(log, call, reasonOverload, err)
	}
	defer release()
	if len(req.GetCsr()) > maxCSRBytes {
		return nil, s.refuse(log, call, reasonBadRequest, status.Errorf(codes.InvalidArgument, "CSR too large: at most %d bytes", maxCSRBytes))
	}
	// Read past the cache: a revocation written before this call is seen
	// even while the cache has not caught up (registeredNow).
	kc, err := s.registeredNow(ctx, cluster)
	if err != nil {
		return nil, s.refuse(log, call, reasonUnregistered, err)
	}
	if err := s.admit(kc, who, chainsOf(ctx)); err != nil {
		return nil, s.refuseCluster(ctx, log, call, reasonOf(err), kc, err)
	}
	return s.sign(ctx, log, call, kc, req.GetCsr())
}

// sign signs csr for the registered cluster kc.
func (s *service) sign(ctx context.Context, log logr.Logger, call string, kc *meshv1alpha1.KubernetesCluster, csr []byte) (*relayv1.CertificateResponse, error) {
	issued, err := s.signCSR(ctx, log, call, kc, csr)
	if err != nil {
		return nil, err
	}
	return s.deliver(ctx, log, call, kc, issued), nil
}

// signCSR signs csr for the registered cluster kc; nothing is counted or
// returned to the caller yet.
func (s *service) signCSR(ctx context.Context, log logr.Logger, call string, kc *meshv1alpha1.KubernetesCluster, csr []byte) (*pki.Issued, error) {
	cluster := kc.Name
	if s.cfg.DisableCa {
		return nil, s.refuse(log, call, reasonUnavailable, status.Error(codes.FailedPrecondition,
			"this server's CA is disabled (disableCa): give the agent its client certificate in relay-client-tls-secret, for example with cert-manager"))
	}
	iss := s.keys.issuer.Load()
	if iss == nil {
		return nil, s.refuse(log, call, reasonUnavailable, status.Errorf(codes.Unavailable, "the server has no signing CA loaded yet: check secret %s", s.cfg.SigningTLSSecret.NamespacedName(s.cfg.Namespace)))
	}
	if err := s.awaitRevocation(ctx, kc); err != nil {
		return nil, s.refuse(log, call, reasonOf(err), err)
	}
	begun := time.Now()
	issued, err := iss.SignPEM(csr, pki.Identity{DNSNames: []string{cluster}, ClusterUID: string(kc.UID)}, s.now())
	s.metrics.observeSigning(call, begun)
	if err != nil {
		return nil, s.refuse(log, call, reasonBadRequest, status.Errorf(codes.InvalidArgument, "%v", err))
	}
	return issued, nil
}

// deliver counts and logs a certificate signed for cluster and returns it
// as the answer.
func (s *service) deliver(ctx context.Context, log logr.Logger, call string, kc *meshv1alpha1.KubernetesCluster, issued *pki.Issued) *relayv1.CertificateResponse {
	s.metrics.issued.WithLabelValues(call).Inc()
	s.conns.issued(kc.Name, issued.Cert, issued.Chain, s.now())
	s.status.changed(kc.Name)
	serial := issued.Cert.SerialNumber.Text(16)
	s.events.issued(kc, call, serial, issued.Cert.NotAfter, peerHost(ctx))
	log.Info("issued client certificate", "serial", serial, "notAfter", issued.Cert.NotAfter)
	return &relayv1.CertificateResponse{CertificateChain: issued.CertPEM, CaCertificate: issued.CAPEM}
}

// refuse counts a refusal, logs its detail and returns the status for the caller.
// Bootstrap's refusals are logged at a bounded rate: anyone who reaches
// the port can cause them.
func (s *service) refuse(log logr.Logger, call, reason string, err error) error {
	s.metrics.refused.WithLabelValues(call, reason).Inc()
	if call == callBootstrap {
		s.limiter.refusals.info(log, "refused", "reason", reason, "error", err.Error())
		return err
	}
	log.Info("refused", "reason", reason, "error", err.Error())
	return err
}

// refuseCluster is refuse for a call of the registered cluster kc, which
// also records a Refused Event on kc.
func (s *service) refuseCluster(ctx context.Context, log logr.Logger, call, reason string, kc *meshv1alpha1.KubernetesCluster, err error) error {
	s.events.refused(kc, call, reason, peerHost(ctx), err)
	return s.refuse(log, call, reason, err)
}

// registered returns cluster's KubernetesCluster, or PermissionDenied
// when it has none.
func (s *service) registered(ctx context.Context, cluster string) (*meshv1alpha1.KubernetesCluster, error) {
	return s.lookUpCluster(ctx, s.reader, cluster)
}

// lookUpCluster reads cluster's KubernetesCluster through r, or returns
// PermissionDenied when it has none.
func (s *service) lookUpCluster(ctx context.Context, r client.Reader, cluster string) (*meshv1alpha1.KubernetesCluster, error) {
	var kc meshv1alpha1.KubernetesCluster
	err := r.Get(ctx, types.NamespacedName{Namespace: s.cfg.Namespace, Name: cluster}, &kc)
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
