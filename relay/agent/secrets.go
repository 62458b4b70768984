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

	"github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
	"github.com/meshrelay/meshrelay/pkg/bootstraptoken"
	"github.com/meshrelay/meshrelay/pkg/pki"
	"github.com/meshrelay/meshrelay/pkg/relaysecret"
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
	// client secret's ca.crt when the root secret is absent (so a cert-manager
	// client secret is enough, without copying the root by hand).
	roots    []*x509.Certificate
	rootKey  *pki.Certified // the root with its key, when relay-root-tls-secret holds tls.key
	client   *tls.Certificate
	clientOK error // why client is unusable, when it is
	managed  bool  // the client secret is managed by something else (cert-manager)
	token    []byte
	// tokenHash is bootstraptoken.Hash of token, as the client secret
	// records the token a certificate came from.
	tokenHash string
	// freshToken is set when the client secret records the bootstrap token
	// its certificate came from and the token secret now holds another:
	// relayctl register issued a fresh one, to be used even while the
	// certificate is still valid.
	freshToken bool
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
		m, r := relaysecret.Validate(relaysecret.Root, root.Data, "", relaysecret.Context{Now: now})
		if m == nil {
			return nil, fmt.Errorf("secret %s: %w", s.root, r.Err())
		}
		t.roots = m.Roots
		if m.Key != nil {
			t.rootKey = &pki.Certified{Cert: m.Cert, Key: m.Key}
		}
	}
	cs, err := s.get(ctx, s.client)
	if err != nil && !errors.As(err, &miss) {
		return nil, err
	}
	t.clientOK = err
	if cs != nil {
		t.managed = relaysecret.ManagedElsewhere(cs)
		if len(t.roots) == 0 && len(cs.Data[relaysecret.KeyCACert]) > 0 {
			t.roots, _ = pki.DecodeCertificates(cs.Data[relaysecret.KeyCACert])
		}
		t.client, t.clientOK = clientCertificate(cs, t.roots, cluster, now)
	}
	if tok, err := s.get(ctx, s.token); err == nil {
		if m, _ := relaysecret.Decode(relaysecret.Token, tok.Data, s.tokKey); m.Token != nil {
			t.token, t.tokenHash = m.Token, bootstraptoken.Hash(string(m.Token))
		}
	}
	if cs != nil && len(t.token) > 0 {
		used, ok := cs.Annotations[v1alpha1.BootstrapTokenUsedAnnotation]
		t.freshToken = ok && used != t.tokenHash
	}
	return t, nil
}

// clientCertificate judges the client secret as the webhook does, for
// cluster, with roots (relay-root-tls-secret's) as the roots it must also
// chain to, and returns it ready for TLS.
func clientCertificate(s *corev1.Secret, roots []*x509.Certificate, cluster string, now time.Time) (*tls.Certificate, error) {
	m, r := relaysecret.Validate(relaysecret.Client, s.Data, "", relaysecret.Context{Cluster: cluster, Roots: roots, Now: now})
	if m == nil {
		return nil, fmt.Errorf("secret %s/%s: %w", s.Namespace, s.Name, r.Err())
	}
	return m.TLSCertificate(), nil
}
