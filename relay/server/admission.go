package server

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"

	meshv1alpha1 "github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
	"github.com/meshrelay/meshrelay/pkg/pki"
)

// registrationSkew is how long before its KubernetesCluster was created a
// certificate without a cluster binding (from cert-manager, an agent's own
// root key, or a relay before bindings) may start and still be admitted:
// pki.DefaultBackdate and three minutes of clock skew between its issuer
// and the API server.
const registrationSkew = 5 * time.Minute

// Why a client certificate was refused, in relay_certificates_refused_total
// and relay_client_certificates_refused_total (besides reasonRevoked).
const (
	reasonExpired      = "expired"
	reasonReregistered = "reregistered"
	reasonMalformed    = "malformed"
	// reasonIssuer: the certificate's issuer or relay root is no longer
	// one the server admits client certificates from.
	reasonIssuer = "issuer"
)

// refusal is why a client certificate may no longer act for its cluster,
// as the gRPC status its caller gets.
type refusal struct {
	reason string
	code   codes.Code
	msg    string
}

func (r *refusal) Error() string { return r.msg }

// GRPCStatus makes the refusal the status of the call it ends.
func (r *refusal) GRPCStatus() *status.Status { return status.New(r.code, r.msg) }

// reasonOf is the metric reason of an admission error.
func reasonOf(err error) string {
	var r *refusal
	if errors.As(err, &r) {
		return r.reason
	}
	return reasonRevoked
}

// admit decides whether the caller's certificate may still act for its
// registered cluster kc: at Renew and when a stream opens (before and
// after the stream is recorded). chains are the connection's verified
// chains: the handshake checked them against the issuers and roots
// admitted then, and they must still pass against those admitted now. A
// certificate that expired while its connection stayed open is
// Unauthenticated; one whose issuer is no longer admitted, that is
// revoked or that belongs to an earlier registration is PermissionDenied.
// Insecure mode has no certificate and admits.
func (s *service) admit(kc *meshv1alpha1.KubernetesCluster, who *caller, chains [][]*x509.Certificate) error {
	if who.cert == nil {
		return nil
	}
	if err := checkNotExpired(kc.Name, who.cert, s.now()); err != nil {
		return err
	}
	if err := s.admitIssuer(kc.Name, who.cert, chains); err != nil {
		return err
	}
	return checkAdmitted(kc, who.cert)
}

// admitIssuer checks the verified chains of an open connection whose
// client certificate cert acts for cluster against the client issuers and
// relay roots the server admits now (keyring.checkClientIssuer): after
// the signing CA changed twice, or a CA left clientIssuerSecret, or a root
// left relay-root-tls-secret, a connection made before may not renew or
// keep its streams.
func (s *service) admitIssuer(cluster string, cert *x509.Certificate, chains [][]*x509.Certificate) error {
	fix := fmt.Sprintf("the agent must connect with a certificate from the current signing CA; if it cannot renew, relayctl register %s issues a fresh bootstrap token, with which it gets one", cluster)
	if len(chains) == 0 {
		return &refusal{reason: reasonIssuer, code: codes.PermissionDenied, msg: fmt.Sprintf(
			"client certificate %s of cluster %s: its connection has no verified chain to check its issuer with; %s", serialOf(cert), cluster, fix)}
	}
	if err := s.keys.checkClientIssuer(chains); err != nil {
		return &refusal{reason: reasonIssuer, code: codes.PermissionDenied, msg: fmt.Sprintf(
			"client certificate %s of cluster %s is no longer admitted on this connection: %v; %s", serialOf(cert), cluster, err, fix)}
	}
	return nil
}

// registeredNow is registered read from the API server rather than the
// cache: Renew signs only for a KubernetesCluster as it is now, so that a
// revocation written before the call is seen even while the cache lags.
func (s *service) registeredNow(ctx context.Context, cluster string) (*meshv1alpha1.KubernetesCluster, error) {
	if s.api == nil {
		return nil, status.Error(codes.Unavailable, "relay-server is starting: it cannot read KubernetesClusters yet; retry")
	}
	return s.lookUpCluster(ctx, s.api, cluster)
}

// admitHandshake is the keyring's check of a verified client certificate
// at the handshake, resumed ones too: the certificate of a registered
// cluster must pass checkAdmitted. An unregistered or deregistering
// cluster passes here and is refused by the call it makes, with the fix.
func (s *service) admitHandshake(cluster string, cert *x509.Certificate) error {
	if s.reader == nil {
		return errors.New("relay-server is starting: its KubernetesCluster cache is not ready")
	}
	var kc meshv1alpha1.KubernetesCluster
	err := s.reader.Get(context.Background(), types.NamespacedName{Namespace: s.cfg.Namespace, Name: cluster}, &kc)
	switch {
	case apierrors.IsNotFound(err):
		return nil
	case err != nil:
		return fmt.Errorf("failed to look up KubernetesCluster %s: %w", cluster, err)
	case kc.DeletionTimestamp != nil:
		return nil
	}
	if err := checkAdmitted(&kc, cert); err != nil {
		s.clientRefused.WithLabelValues("handshake", reasonOf(err)).Inc()
		s.events.refused(&kc, "handshake", reasonOf(err), "unknown", err)
		// Anyone holding a refused certificate can make handshakes in a
		// loop: the lines share the rate of the other refusals' logs.
		s.logRefusal("refused a client certificate at the handshake", "cluster", cluster, "serial", serialOf(cert), "error", err.Error())
		return err
	}
	return nil
}

// checkNotExpired refuses a certificate whose NotAfter has passed: the
// handshake checked it once, but a connection outlives it.
func checkNotExpired(cluster string, cert *x509.Certificate, now time.Time) error {
	if now.Before(cert.NotAfter) {
		return nil
	}
	return &refusal{reason: reasonExpired, code: codes.Unauthenticated, msg: fmt.Sprintf(
		"client certificate %s of cluster %s expired at %s: this connection may not use it any more; relayctl register %s issues a fresh bootstrap token, with which the agent bootstraps again",
		serialOf(cert), cluster, cert.NotAfter.UTC().Format(time.RFC3339), cluster)}
}

// checkAdmitted reports why cert may not act for the registration kc, or
// nil: a certificate bound to a cluster UID must be bound to kc's; one
// without a binding must have been issued at or after kc was created
// (within registrationSkew); and neither may be revoked by
// spec.revocation (issued before issuedBefore, or a listed serial).
func checkAdmitted(kc *meshv1alpha1.KubernetesCluster, cert *x509.Certificate) error {
	cluster, serial := kc.Name, serialOf(cert)
	fix := fmt.Sprintf("relayctl register %s issues a fresh bootstrap token, with which the agent gets a new certificate", cluster)
	uid, bound, err := pki.ClusterUID(cert)
	switch {
	case err != nil:
		return &refusal{reason: reasonMalformed, code: codes.PermissionDenied, msg: fmt.Sprintf(
			"client certificate %s of cluster %s: %v; %s", serial, cluster, err, fix)}
	case bound && uid != string(kc.UID):
		return &refusal{reason: reasonReregistered, code: codes.PermissionDenied, msg: fmt.Sprintf(
			"client certificate %s was issued to an earlier registration of cluster %s (KubernetesCluster UID %s, now %s): the cluster was deleted and registered again; %s",
			serial, cluster, uid, kc.UID, fix)}
	case !bound && cert.NotBefore.Before(kc.CreationTimestamp.Add(-registrationSkew)):
		return &refusal{reason: reasonReregistered, code: codes.PermissionDenied, msg: fmt.Sprintf(
			"client certificate %s of cluster %s starts at %s, before KubernetesCluster %s was created at %s: it belongs to an earlier registration; %s",
			serial, cluster, cert.NotBefore.UTC().Format(time.RFC3339), cluster, kc.CreationTimestamp.UTC().Format(time.RFC3339), fix)}
	}
	rev := kc.Spec.Revocation
	if rev == nil {
		return nil
	}
	if rev.IssuedBefore != nil {
		if at := pki.IssuedAt(cert); at.Before(rev.IssuedBefore.Time) {
			return &refusal{reason: reasonRevoked, code: codes.PermissionDenied, msg: fmt.Sprintf(
				"client certificate %s of cluster %s is revoked: issued at %s, before spec.revocation.issuedBefore %s of KubernetesCluster %s; %s",
				serial, cluster, at.UTC().Format(time.RFC3339), rev.IssuedBefore.UTC().Format(time.RFC3339), cluster, fix)}
		}
	}
	if slices.Contains(rev.Serials, serial) {
		return &refusal{reason: reasonRevoked, code: codes.PermissionDenied, msg: fmt.Sprintf(
			"client certificate %s of cluster %s is revoked: spec.revocation.serials of KubernetesCluster %s lists it; %s",
			serial, cluster, cluster, fix)}
	}
	return nil
}

// serialOf is cert's serial number as spec.revocation.serials writes it.
func serialOf(cert *x509.Certificate) string { return cert.SerialNumber.Text(16) }

// maxRevocationWait is how long signing waits for a revocation of the
// cluster that takes effect in the next moments (relayctl revoke sets
// issuedBefore to the next whole second), so that what it signs is not
// refused at once.
const maxRevocationWait = 2 * time.Second

// awaitRevocation returns once a certificate signed for kc now would be
// issued at or after its spec.revocation.issuedBefore, waiting on s.clock
// up to maxRevocationWait; past that it refuses with Unavailable, since
// what it signed would be refused. A certificate's times hold whole
// seconds, so it waits for a second past the cutoff. A call that ends
// while it waits gets ctx's error as its status.
func (s *service) awaitRevocation(ctx context.Context, kc *meshv1alpha1.KubernetesCluster) error {
	rev := kc.Spec.Revocation
	if rev == nil || rev.IssuedBefore == nil {
		return nil
	}
	wait := rev.IssuedBefore.Add(time.Second).Sub(s.now())
	switch {
	case wait <= 0:
		return nil
	case wait <= maxRevocationWait:
		select {
		case <-s.clock.After(wait):
			return nil
		case <-ctx.Done():
			return &refusal{reason: reasonRevoked, code: status.FromContextError(ctx.Err()).Code(), msg: fmt.Sprintf(
				"the call ended while cluster %s's revocation (spec.revocation.issuedBefore %s) was taking effect: %v; retry",
				kc.Name, rev.IssuedBefore.UTC().Format(time.RFC3339), ctx.Err())}
		}
	}
	return &refusal{reason: reasonRevoked, code: codes.Unavailable, msg: fmt.Sprintf(
		"cluster %s's certificates issued before %s are revoked (spec.revocation.issuedBefore), later than this server's clock: retry after it, or correct the revocation or the clock",
		kc.Name, rev.IssuedBefore.UTC().Format(time.RFC3339))}
}

// logRefusal logs a refused client certificate at the rate the keyring's
// refusals allow (all of it when the service has none: tests that build
// one alone).
func (s *service) logRefusal(msg string, keysAndValues ...any) {
	if s.keys == nil || s.keys.refusals == nil {
		s.log.Info(msg, keysAndValues...)
		return
	}
	s.keys.refusals.info(s.log, msg, keysAndValues...)
}
