package server

import (
	"context"
	"time"

	"github.com/go-logr/logr"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"

	meshv1alpha1 "github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
	"github.com/meshrelay/meshrelay/pkg/bootstraptoken"
	relayv1 "github.com/meshrelay/meshrelay/relay/api/v1"
)

// bootstrapCredential is what a presented bootstrap token proved.
type bootstrapCredential struct {
	// shared is set for the shared identity token (relay-identity-token-
	// secret on the management cluster); otherwise hash is the recorded
	// hash of the cluster's own token that the presented one matched.
	shared bool
	hash   string
}

func (c *bootstrapCredential) kind() string {
	if c.shared {
		return "shared"
	}
	return "cluster"
}

// callBootstrap is the Bootstrap call in metrics and logs.
const callBootstrap = "bootstrap"

// maxClusterBytes bounds the cluster name a Bootstrap names: a DNS label.
const maxClusterBytes = 63

// consumeAttempts bounds the conditional writes of one bootstrap when the
// KubernetesCluster changes for other reasons (its status, for one).
const consumeAttempts = 5

// registerFix is how a refused caller gets a fresh token.
const registerFix = "relayctl register %[1]s --context <management> --remote-context <workload cluster>"

// bootstrap checks the token of req against the cluster's KubernetesCluster,
// signs the CSR, consumes the token with a conditional write, and only when
// that write succeeded returns the certificate. Of concurrent bootstraps
// with one token, exactly one gets a certificate.
func (s *service) bootstrap(ctx context.Context, log logr.Logger, req *relayv1.BootstrapRequest) (*relayv1.CertificateResponse, error) {
	const call = callBootstrap
	cluster, token := req.GetCluster(), req.GetToken()
	shared := s.isSharedToken(token)
	kc, err := s.registered(ctx, cluster)
	if err != nil {
		if status.Code(err) == codes.PermissionDenied && !shared {
			// A caller holding no valid token learns nothing about which
			// clusters are registered.
			return nil, s.refuse(log, call, reasonToken, tokenNotValid(cluster))
		}
		return nil, s.refuse(log, call, reasonUnregistered, err)
	}
	cred, reason, recErr, err := s.checkBootstrapToken(kc, token, shared)
	if err != nil {
		if recErr != nil {
			// The caller is told only that its token is not valid; the
			// broken record is for the operator.
			log = log.WithValues("record", recErr.Error())
		}
		return nil, s.refuseCluster(ctx, log, call, reason, kc, err)
	}
	log = log.WithValues("token", cred.kind())
	issued, err := s.signCSR(ctx, log, call, kc, req.GetCsr())
	if err != nil {
		return nil, err
	}
	if reason, err := s.consumeBootstrapToken(ctx, kc, cred); err != nil {
		return nil, s.refuseCluster(ctx, log.WithValues("discardedSerial", issued.Cert.SerialNumber.Text(16)), call, reason, kc, err)
	}
	return s.deliver(ctx, log, call, kc, issued), nil
}

// isSharedToken reports, in constant time, whether token is the shared
// identity token the server loaded.
func (s *service) isSharedToken(token string) bool {
	stored := s.keys.token.Load()
	return stored != nil && tokensEqual([]byte(token), *stored)
}

// checkBootstrapToken judges token for the registered cluster kc, as the
// cache holds it: the cluster's own unexpired token, or the shared one
// (shared) while it is allowed and has not bootstrapped kc before. A
// refusal comes with its reason label, and with recErr when kc's token
// record does not parse: that is for the log, never for the caller.
func (s *service) checkBootstrapToken(kc *meshv1alpha1.KubernetesCluster, token string, shared bool) (cred *bootstrapCredential, reason string, recErr, err error) {
	cluster := kc.Name
	rec, recErr := bootstraptoken.Read(kc.Annotations)
	switch {
	case rec.Matches(token):
		if rec.Expired(s.now()) {
			return nil, reasonTokenExpired, nil, tokenExpired(cluster, rec)
		}
		return &bootstrapCredential{hash: rec.Hash}, "", nil, nil
	case shared:
		if reason, err := s.sharedTokenAllowed(kc); err != nil {
			return nil, reason, recErr, err
		}
		return &bootstrapCredential{shared: true}, "", nil, nil
	}
	// A record that does not parse gets the same answer as a wrong token,
	// so that a caller without a valid token cannot tell a registered
	// cluster from an unregistered one; bootstrap logs recErr.
	return nil, reasonToken, recErr, tokenNotValid(cluster)
}

// sharedTokenAllowed refuses the shared identity token when the server
// turned it off, when kc has a token of its own (issued by relayctl
// register, used or not, readable or not), or when it (or any token)
// bootstrapped kc before.
func (s *service) sharedTokenAllowed(kc *meshv1alpha1.KubernetesCluster) (string, error) {
	cluster := kc.Name
	if s.cfg.DisableSharedToken {
		return reasonSharedToken, status.Errorf(codes.Unauthenticated,
			"the shared identity token (%[2]s) is turned off on this server (disableSharedToken): give cluster %[1]s its own token with "+registerFix,
			cluster, s.keys.tokenKey())
	}
	if _, ok := kc.Annotations[meshv1alpha1.BootstrapTokenHashAnnotation]; ok {
		// Whoever holds the shared token must not win the bootstrap of a
		// cluster that was given a token of its own.
		return reasonSharedToken, status.Errorf(codes.Unauthenticated,
			"cluster %[1]s has a bootstrap token of its own, so the shared identity token (%[2]s) may not bootstrap it: bootstrap with the token relayctl register wrote to the workload cluster, or issue a fresh one with "+registerFix,
			cluster, s.keys.tokenKey())
	}
	if at, ok := bootstraptoken.Bootstrapped(kc.Annotations); ok {
		return reasonSharedToken, status.Errorf(codes.Unauthenticated,
			"the shared identity token (%[2]s) bootstraps a cluster only once, and cluster %[1]s was bootstrapped at %[3]s: issue it its own token with "+registerFix,
			cluster, s.keys.tokenKey(), at.UTC().Format(time.RFC3339))
	}
	return "", nil
}

// tokenNotValid is the refusal of a token that matches nothing this
// cluster may use.
func tokenNotValid(cluster string) error {
	return status.Errorf(codes.Unauthenticated,
		"the bootstrap token is not valid for cluster %[1]s: it was already used, replaced by a newer one, or issued for another cluster; issue a fresh one with "+registerFix,
		cluster)
}

// tokenExpired is the refusal of cluster's own token past its expiry.
func tokenExpired(cluster string, rec *bootstraptoken.Record) error {
	return status.Errorf(codes.Unauthenticated,
		"the bootstrap token of cluster %[1]s expired unused at %[2]s: issue a fresh one with "+registerFix+" (--token-ttl sets its lifetime)",
		cluster, rec.Expires.UTC().Format(time.RFC3339))
}

// consumeBootstrapToken spends cred for cached, the cluster's
// KubernetesCluster as the cache holds it, with a conditional write: it
// checks that the token is still unused in the object it writes, and
// updates it at that object's resourceVersion, removing the token's record
// and marking the cluster bootstrapped. The first write is made at the
// cached resourceVersion, which saves a read in the usual case; a Conflict
// means the cache was behind or someone else wrote first: it reads the
// object past the cache and tries again, and refuses when the token is
// gone. Either way the write succeeds only on the version the token was
// checked in, so of concurrent bootstraps with one token exactly one
// wins. A refusal comes with its reason label.
func (s *service) consumeBootstrapToken(ctx context.Context, cached *meshv1alpha1.KubernetesCluster, cred *bootstrapCredential) (string, error) {
	cluster := cached.Name
	key := types.NamespacedName{Namespace: s.cfg.Namespace, Name: cluster}
	kc := cached.DeepCopy()
	for attempt := 1; ; attempt++ {
		if attempt > 1 {
			kc = &meshv1alpha1.KubernetesCluster{}
			switch err := s.api.Get(ctx, key, kc); {
			case apierrors.IsNotFound(err):
				return reasonUnregistered, status.Errorf(codes.PermissionDenied, "cluster %s was deregistered during its bootstrap", cluster)
			case err != nil:
				return reasonUnavailable, status.Errorf(codes.Unavailable, "failed to read KubernetesCluster %s: %v", key, err)
			case kc.DeletionTimestamp != nil:
				return reasonUnregistered, status.Errorf(codes.PermissionDenied, "cluster %s is being deregistered", cluster)
			}
		}
		if reason, err := s.stillUnused(kc, cred); err != nil {
			return reason, err
		}
		if kc.Annotations == nil {
			kc.Annotations = map[string]string{}
		}
		if cred.shared {
			bootstraptoken.MarkBootstrapped(kc.Annotations, s.now())
		} else {
			bootstraptoken.Consume(kc.Annotations, s.now())
		}
		err := s.clusters.update(ctx, kc)
		switch {
		case err == nil:
			return "", nil
		case apierrors.IsNotFound(err):
			return reasonUnregistered, status.Errorf(codes.PermissionDenied, "cluster %s was deregistered during its bootstrap", cluster)
		case apierrors.IsConflict(err) && attempt < consumeAttempts:
			continue
		case apierrors.IsConflict(err):
			return reasonUnavailable, status.Errorf(codes.Unavailable, "KubernetesCluster %s changed %d times while its bootstrap token was being used: retry", key, attempt)
		default:
			return reasonUnavailable, status.Errorf(codes.Unavailable, "failed to record the use of the bootstrap token on KubernetesCluster %s: %v", key, err)
		}
	}
}

// stillUnused checks cred against kc, the version of the KubernetesCluster
// the write that spends it is conditional on.
func (s *service) stillUnused(kc *meshv1alpha1.KubernetesCluster, cred *bootstrapCredential) (string, error) {
	if cred.shared {
		return s.sharedTokenAllowed(kc)
	}
	rec, _ := bootstraptoken.Read(kc.Annotations)
	switch {
	case rec == nil || rec.Hash != cred.hash:
		return reasonTokenUsed, status.Errorf(codes.Unauthenticated,
			"this bootstrap token was already used for cluster %[1]s, or replaced by a newer one: issue a fresh one with "+registerFix,
			kc.Name)
	case rec.Expired(s.now()):
		// It expired while the CSR was being signed.
		return reasonTokenExpired, tokenExpired(kc.Name, rec)
	}
	return "", nil
}
