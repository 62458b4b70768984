package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
	"github.com/meshrelay/meshrelay/pkg/bootstraptoken"
	"github.com/meshrelay/meshrelay/pkg/pki"
	"github.com/meshrelay/meshrelay/pkg/relaysecret"
	"github.com/meshrelay/meshrelay/pkg/trustbundle"
)

// secretStore reads and writes the agent's relay secrets: the client
// certificate, the root CA and the identity token, by name. With a trust
// bundle folder (trust not nil) the root CA comes from the folder instead,
// and the root secret is only ever patched (persisting a bundle the server
// pushed), never read.
type secretStore struct {
	reader client.Reader
	writer client.Client
	client types.NamespacedName
	root   types.NamespacedName
	token  types.NamespacedName
	tokKey string
	// trust is the mounted trust bundle folder; nil reads root instead.
	trust *trustDir
	// anchors holds the roots of the server's last bundle, which count
	// beside the local ones; nil in tests that have none.
	anchors *rootSet
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
	// persisted are the roots kept in the agent's cluster: the trust bundle
	// folder's, or relay-root-tls-secret's ca.crt without a folder.
	persisted []*x509.Certificate
	// local are the roots the agent keeps itself: persisted, or the client
	// secret's ca.crt when persisted is empty (so a cert-manager client
	// secret is enough, without copying the root by hand).
	local []*x509.Certificate
	// roots verify the server and the client certificate: local and the
	// roots of the server's last bundle.
	roots    []*x509.Certificate
	rootKey  *pki.Certified // the root with its key, when relay-root-tls-secret holds tls.key
	client   *tls.Certificate
	clientOK error // why client is unusable, when it is
	managed  bool  // the client secret is managed by something else (cert-manager)
	// held is the certificate in the client secret's tls.crt, whether or
	// not it is usable (expired, for another cluster), with the
	// certificates after it; nil when tls.crt holds none that decodes.
	held      *x509.Certificate
	heldChain []*x509.Certificate
	// foreign is set when held was not issued by the relay server (nor by
	// this agent with the root key): see issuedByRelay. The agent uses it
	// and never renews or replaces it.
	foreign bool
	token   []byte
	// tokenHash is bootstraptoken.Hash of token, as the client secret
	// records the token a certificate came from.
	tokenHash string
	// freshToken is set when the client secret records the bootstrap token
	// its certificate came from and the token secret now holds another:
	// relayctl register issued a fresh one, to be used even while the
	// certificate is still valid.
	freshToken bool
}

// read collects the agent's material from its secrets (and its trust
// bundle folder). Missing or broken secrets are not errors here: the
// caller decides what it can do without.
func (s *secretStore) read(ctx context.Context, cluster string, now time.Time) (*material, error) {
	t := &material{}
	if s.trust != nil {
		t.persisted = s.trust.roots()
	} else if err := s.readRoot(ctx, t, now); err != nil {
		return nil, err
	}
	t.local = t.persisted
	cs, err := s.get(ctx, s.client)
	var miss *errMissing
	if err != nil && !errors.As(err, &miss) {
		return nil, err
	}
	t.clientOK = err
	if cs != nil && len(t.local) == 0 && len(cs.Data[relaysecret.KeyCACert]) > 0 {
		t.local, _ = pki.DecodeCertificates(cs.Data[relaysecret.KeyCACert])
	}
	t.roots = t.local
	if s.anchors != nil {
		t.roots = trustbundle.Unique(append(slices.Clone(t.local), s.anchors.pushedRoots()...))
	}
	if cs != nil {
		t.managed = relaysecret.ManagedElsewhere(cs)
		if certs, err := pki.DecodeCertificates(cs.Data[relaysecret.KeyTLSCert]); err == nil && len(certs) > 0 {
			t.held, t.heldChain = certs[0], certs[1:]
			// ca.crt may hold the intermediates too: they only help to
			// build the chain, the roots are the anchors.
			inter, _ := pki.DecodeCertificates(cs.Data[relaysecret.KeyCACert])
			t.foreign = len(t.roots) > 0 && !issuedByRelay(t.held, append(slices.Clone(t.heldChain), inter...), t.roots, t.rootKey, now)
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

// readRoot reads relay-root-tls-secret into t: its roots, and the root's
// key when it holds one. A missing secret leaves t as it is.
func (s *secretStore) readRoot(ctx context.Context, t *material, now time.Time) error {
	root, err := s.get(ctx, s.root)
	var miss *errMissing
	if errors.As(err, &miss) {
		return nil
	}
	if err != nil {
		return err
	}
	m, r := relaysecret.Validate(relaysecret.Root, root.Data, "", relaysecret.Context{Now: now})
	if m == nil {
		return fmt.Errorf("secret %s: %w", s.root, r.Err())
	}
	t.persisted = m.Roots
	if m.Key != nil {
		t.rootKey = &pki.Certified{Cert: m.Cert, Key: m.Key}
	}
	return nil
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
