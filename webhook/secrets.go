package webhook

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/pkg/pki"
)

// secretRole is what a secret is to the relay.
type secretRole int

const (
	notRelay secretRole = iota
	rootSecret
	signingSecret
	serverSecret
	clientSecret
	tokenSecret
	istioCASecret
)

// secrets checks relay secrets. It reads the other relay secrets of the
// namespace through reader: the root a chain must also verify to, and the
// certificates an update of a CA must not orphan.
type secrets struct {
	cfg    *config.Webhook
	reader client.Reader
	now    func() time.Time
}

func (s *secrets) roleOf(key types.NamespacedName) secretRole {
	ns := s.cfg.Namespace
	switch key {
	case s.cfg.RootTLSSecret.NamespacedName(ns):
		return rootSecret
	case s.cfg.SigningTLSSecret.NamespacedName(ns):
		return signingSecret
	case s.cfg.TLSSecret.NamespacedName(ns):
		return serverSecret
	case s.cfg.ClientTLSSecret.NamespacedName(ns):
		return clientSecret
	case s.cfg.TokenSecret.NamespacedName(ns):
		return tokenSecret
	case types.NamespacedName{Namespace: s.cfg.IstioNamespace, Name: s.cfg.IstioCASecret}:
		return istioCASecret
	}
	return notRelay
}

// get returns the secret named key, or nil when it does not exist.
func (s *secrets) get(ctx context.Context, key types.NamespacedName) (*corev1.Secret, error) {
	var sec corev1.Secret
	if err := s.reader.Get(ctx, key, &sec); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("failed to read secret %s: %w", key, err)
	}
	return &sec, nil
}

// validate checks sec; old is the stored secret on update, nil on create.
// An error is a failure to read what the checks need, not a denial.
func (s *secrets) validate(ctx context.Context, sec, old *corev1.Secret) (*problems, error) {
	p := &problems{}
	now := s.now()
	switch role := s.roleOf(client.ObjectKeyFromObject(sec)); role {
	case rootSecret:
		s.validateRoot(p, sec, now)
	case signingSecret, serverSecret, clientSecret:
		roots, err := s.otherRoots(ctx)
		if err != nil {
			return nil, err
		}
		s.validateCertified(p, sec, role, roots, now)
	case tokenSecret:
		s.validateToken(p, sec)
	case istioCASecret:
		validateIstioCA(p, sec, s.cfg.ClientTLSSecretRotationGracePeriodRatio, now)
	}
	if len(p.errs) == 0 && old != nil {
		if err := s.checkChainsKept(ctx, p, sec, old, now); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// rootCAs is the ca.crt of relay-root-tls-secret, decoded only when a
// secret's own ca.crt differs from it.
type rootCAs struct {
	pem []byte
}

// certs decodes the roots; nil when they do not decode (the root secret's
// own check reports that).
func (r *rootCAs) certs() []*x509.Certificate {
	certs, err := pki.DecodeCertificates(r.pem)
	if err != nil {
		return nil
	}
	return certs
}

// otherRoots returns relay-root-tls-secret's ca.crt, which a secret must
// also chain to, or nil when that secret does not exist or holds none.
func (s *secrets) otherRoots(ctx context.Context) (*rootCAs, error) {
	root, err := s.get(ctx, s.cfg.RootTLSSecret.NamespacedName(s.cfg.Namespace))
	if err != nil || root == nil || len(bytes.TrimSpace(root.Data[pki.KeyCACert])) == 0 {
		return nil, err
	}
	return &rootCAs{pem: root.Data[pki.KeyCACert]}, nil
}

// validateRoot checks relay-root-tls-secret: ca.crt holds self-signed CAs
// (more than one while a root is being replaced); tls.crt, when present, is
// the root; tls.key, when present, is its key.
func (s *secrets) validateRoot(p *problems, sec *corev1.Secret, now time.Time) {
	roots, ok := decodeCerts(p, sec, pki.KeyCACert, "add the root CA certificate in PEM")
	if !ok {
		return
	}
	for i, r := range roots {
		if _, err := pki.VerifyChain(r, nil, nil, pki.RoleRoot, now); err != nil {
			p.deny(dataPath(pki.KeyCACert), "certificate %d: %v", i+1, err)
			continue
		}
		s.warnIfRotating(p, pki.KeyCACert, r, now)
	}
	keyFor := roots[0]
	if len(bytes.TrimSpace(sec.Data[pki.KeyTLSCert])) > 0 {
		certs, ok := decodeCerts(p, sec, pki.KeyTLSCert, "")
		if !ok {
			return
		}
		if _, err := pki.VerifyChain(certs[0], nil, nil, pki.RoleRoot, now); err != nil {
			p.denyErr(dataPath(pki.KeyTLSCert), err)
			return
		}
		keyFor = certs[0]
	}
	if len(bytes.TrimSpace(sec.Data[pki.KeyTLSKey])) > 0 {
		pub, err := pki.PublicKeyOfPrivateKey(sec.Data[pki.KeyTLSKey])
		if err == nil {
			err = pki.PublicKeyMatchesCertificate(pub, keyFor)
		}
		if err != nil {
			p.denyErr(dataPath(pki.KeyTLSKey), err)
		}
	}
}

// validateCertified checks a secret holding tls.crt, tls.key and ca.crt for
// role: the data decode, the key matches, every DNS name is DNS-1123, the
// chain verifies to ca.crt and to roots (relay-root-tls-secret's, when it
// exists and differs from ca.crt) for the role's usage, the names fit the
// role.
func (s *secrets) validateCertified(p *problems, sec *corev1.Secret, role secretRole, roots *rootCAs, now time.Time) {
	crt, key, ca := sec.Data[pki.KeyTLSCert], sec.Data[pki.KeyTLSKey], sec.Data[pki.KeyCACert]
	if len(bytes.TrimSpace(crt)) == 0 {
		p.deny(dataPath(pki.KeyTLSCert), "missing: add the PEM certificate chain")
		return
	}
	var v *pki.Verified
	var err error
	switch role {
	case serverSecret:
		v, err = pki.ValidateServerSecret(crt, key, ca, s.cfg.Authority, now)
	case clientSecret:
		cluster := s.cfg.Cluster
		if cluster == "" {
			if certs, derr := pki.DecodeCertificates(crt); derr == nil {
				cluster, _ = pki.ClientIdentity(certs[0])
				p.warn("%s: this webhook has no --cluster, so the client certificate's cluster name %q was not compared with this cluster's", sec.Name, cluster)
			}
		}
		v, err = pki.ValidateClientSecret(crt, key, ca, cluster, now)
	case signingSecret:
		v, err = validateSigning(crt, key, ca, now)
	}
	if err != nil {
		// A DNS name with an underscore is named first: it is the usual
		// mistake, and the one the chain error would hide.
		if certs, derr := pki.DecodeCertificates(crt); derr == nil {
			checkDNSNames(p, certs[0], role == serverSecret)
		}
		denyPKI(p, err)
		return
	}
	if checkDNSNames(p, v.Cert, role == serverSecret); len(p.errs) > 0 {
		return
	}
	if roots != nil && !bytes.Equal(roots.pem, ca) {
		if _, err := pki.VerifyChain(v.Cert, v.Intermediates, roots.certs(), pkiRole(role), now); err != nil {
			p.deny(dataPath(pki.KeyTLSCert), "does not chain to %s's ca.crt: %v: issue it from that root, or put its root there", s.cfg.RootTLSSecret.Name, err)
			return
		}
	}
	s.warnIfRotating(p, pki.KeyTLSCert, v.Cert, now)
}

// validateSigning checks relay-tls-signing-secret: a CA that may sign
// leaves, with its key, chaining to ca.crt.
func validateSigning(crt, key, ca []byte, now time.Time) (*pki.Verified, error) {
	kp, err := pki.DecodeKeyPair(crt, key, ca)
	if err != nil {
		return nil, err
	}
	if len(kp.Roots) == 0 {
		return nil, &pki.SecretError{Key: pki.KeyCACert, Err: errors.New("missing: add the root CA certificate that signed the intermediate")}
	}
	chain, err := pki.VerifyChain(kp.Cert, kp.Intermediates, kp.Roots, pki.RoleSigningCA, now)
	if err != nil {
		return nil, &pki.SecretError{Key: pki.KeyTLSCert, Err: err}
	}
	return &pki.Verified{Cert: kp.Cert, Intermediates: kp.Intermediates, Roots: kp.Roots, Chain: chain}, nil
}

func (s *secrets) validateToken(p *problems, sec *corev1.Secret) {
	k := s.cfg.TokenSecret.Key
	token := bytes.TrimSpace(sec.Data[k])
	switch {
	case len(token) == 0:
		p.deny(dataPath(k), "missing or empty: copy the token from %s on the management cluster", s.cfg.TokenSecret.Name)
	case len(token) < config.MinTokenBytes:
		p.warn("%s: data[%s] is %d bytes; an identity token shorter than %d bytes is easier to guess: use the one relay-server generates", sec.Name, k, len(token), config.MinTokenBytes)
	}
}

// warnIfRotating warns when cert has less than the rotation ratio of its
// lifetime left.
func (s *secrets) warnIfRotating(p *problems, key string, cert *x509.Certificate, now time.Time) {
	if in, err := pki.InRotationWindow(cert, s.cfg.ClientTLSSecretRotationGracePeriodRatio, now); err == nil && in {
		p.warn("data[%s]: certificate %q expires at %s, in %s: it is inside its rotation window, renew it", key, cert.Subject.CommonName,
			cert.NotAfter.UTC().Format(time.RFC3339), cert.NotAfter.Sub(now).Round(time.Minute))
	}
}

// decodeCerts decodes data[key] of sec, denying when it is missing (with
// fix, when given) or does not decode.
func decodeCerts(p *problems, sec *corev1.Secret, key, fix string) ([]*x509.Certificate, bool) {
	data := sec.Data[key]
	if len(bytes.TrimSpace(data)) == 0 {
		if fix == "" {
			fix = "add it"
		}
		p.deny(dataPath(key), "missing: %s", fix)
		return nil, false
	}
	certs, err := pki.DecodeCertificates(data)
	if err != nil {
		p.denyErr(dataPath(key), err)
		return nil, false
	}
	return certs, true
}

// checkDNSNames denies every DNS name of cert that is not DNS-1123, naming
// an underscore as such.
func checkDNSNames(p *problems, cert *x509.Certificate, allowWildcard bool) {
	for _, n := range cert.DNSNames {
		if err := pki.CheckDNSName(n, allowWildcard); err != nil {
			p.denyErr(dataPath(pki.KeyTLSCert), err)
		}
	}
}

// denyPKI records a pkg/pki error at the data key it names.
func denyPKI(p *problems, err error) {
	var se *pki.SecretError
	if errors.As(err, &se) {
		p.denyErr(dataPath(se.Key), se.Err)
		return
	}
	p.denyErr(field.NewPath("data"), err)
}

func pkiRole(r secretRole) pki.Role {
	switch r {
	case serverSecret:
		return pki.RoleServer
	case clientSecret:
		return pki.RoleClient
	case signingSecret:
		return pki.RoleSigningCA
	}
	return pki.RoleRoot
}
