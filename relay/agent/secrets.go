package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshrelay/meshrelay/internal/scheme"
	"github.com/meshrelay/meshrelay/pkg/pki"
)

// secretStore reads and writes the agent's relay secrets: the client
// certificate, the root CA and the identity token, by name.
type secretStore struct {
	reader client.Reader
	writer client.Client
	client types.NamespacedName
	root   types.NamespacedName
	token  types.NamespacedName
	tokKey string
}

// errMissing says a secret does not exist.
type errMissing struct{ key types.NamespacedName }

func (e *errMissing) Error() string { return fmt.Sprintf("secret %s is missing", e.key) }

func (s *secretStore) get(ctx context.Context, key types.NamespacedName) (*corev1.Secret, error) {
	var sec corev1.Secret
	err := s.reader.Get(ctx, key, &sec)
	if apierrors.IsNotFound(err) {
		return nil, &errMissing{key}
	}
	if err != nil {
		return nil, fmt.Errorf("failed to get secret %s: %w", key, err)
	}
	return &sec, nil
}

// material is what the agent's secrets hold to connect with.
type material struct {
	// roots verify the server: relay-root-tls-secret's ca.crt, or the
	// client secret's ca.crt when the root secret is absent (reference 004's
	// known issue).
	roots    []*x509.Certificate
	rootKey  *pki.Certified // the root with its key, when relay-root-tls-secret holds tls.key
	client   *tls.Certificate
	clientOK error // why client is unusable, when it is
	managed  bool  // the client secret is managed by something else (cert-manager)
	token    []byte
}

// read collects the agent's material from its secrets. Missing or broken
// secrets are not errors here: the caller decides what it can do without.
func (s *secretStore) read(ctx context.Context, cluster string, now time.Time) (*material, error) {
	t := &material{}
	root, err := s.get(ctx, s.root)
	var miss *errMissing
	if err != nil && !errors.As(err, &miss) {
		return nil, err
	}
	if root != nil {
		if t.roots, err = pki.DecodeCertificates(root.Data[pki.KeyCACert]); err != nil {
			return nil, fmt.Errorf("secret %s: %w", s.root, &pki.SecretError{Key: pki.KeyCACert, Err: err})
		}
		if len(root.Data[pki.KeyTLSKey]) > 0 {
			key, err := pki.DecodePrivateKey(root.Data[pki.KeyTLSKey])
			if err != nil {
				return nil, fmt.Errorf("secret %s: %w", s.root, &pki.SecretError{Key: pki.KeyTLSKey, Err: err})
			}
			t.rootKey = &pki.Certified{Cert: t.roots[0], Key: key}
		}
	}
	cs, err := s.get(ctx, s.client)
	if err != nil && !errors.As(err, &miss) {
		return nil, err
	}
	t.clientOK = err
	if cs != nil {
		t.managed = scheme.ManagedElsewhere(cs)
		if len(t.roots) == 0 && len(cs.Data[pki.KeyCACert]) > 0 {
			t.roots, _ = pki.DecodeCertificates(cs.Data[pki.KeyCACert])
		}
		t.client, t.clientOK = clientCertificate(cs, t.roots, cluster, now)
	}
	if tok, err := s.get(ctx, s.token); err == nil {
		t.token = tok.Data[s.tokKey]
	}
	return t, nil
}

// clientCertificate checks the client secret against the roots and the
// cluster name and returns it ready for TLS. An expired certificate is
// returned with its error, so that the caller can re-bootstrap.
func clientCertificate(s *corev1.Secret, roots []*x509.Certificate, cluster string, now time.Time) (*tls.Certificate, error) {
	kp, err := pki.DecodeKeyPair(s.Data[pki.KeyTLSCert], s.Data[pki.KeyTLSKey], nil)
	if err != nil {
		return nil, fmt.Errorf("secret %s/%s: %w", s.Namespace, s.Name, err)
	}
	cert := kp.TLSCertificate()
	if name, err := pki.ClientIdentity(kp.Cert); err != nil || name != cluster {
		if err == nil {
			err = fmt.Errorf("client certificate is for cluster %q, not %q", name, cluster)
		}
		return nil, fmt.Errorf("secret %s/%s: %w", s.Namespace, s.Name, err)
	}
	if len(roots) > 0 {
		if _, err := pki.VerifyChain(kp.Cert, kp.Intermediates, roots, pki.RoleClient, now); err != nil {
			return cert, fmt.Errorf("secret %s/%s: %w", s.Namespace, s.Name, err)
		}
	}
	return cert, pki.CheckValidity(kp.Cert, now)
}
