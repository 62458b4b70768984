package server

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/pkg/pki"
	"github.com/meshrelay/meshrelay/pkg/relaysecret"
)

// rootSecretName returns the secret holding p's root.
func rootSecretName(p *meshv1alpha1.RootTrustPolicy) types.NamespacedName {
	if ref := p.Spec.Config.MgmtServerCa.SecretRef; ref != nil {
		ns := ref.Namespace
		if ns == "" {
			ns = p.Namespace
		}
		return types.NamespacedName{Namespace: ns, Name: ref.Name}
	}
	return types.NamespacedName{Namespace: p.Namespace, Name: relaysecret.TrustRootName(p.Name)}
}

// ensureTrustRoot returns p's root with its key: the secret the policy names,
// or the generated root-trust.<policy>, created when absent and never
// overwritten (any number of replicas may race; the create that wins
// defines the root). api reads from the API server, so that a secret
// another replica just created is seen.
func ensureTrustRoot(ctx context.Context, c client.Client, api client.Reader, p *meshv1alpha1.RootTrustPolicy, relay map[string]string, now time.Time) (*pki.Certified, error) {
	ca := p.Spec.Config.MgmtServerCa
	key := rootSecretName(p)
	if (ca.Generated == nil) == (ca.SecretRef == nil) {
		return nil, errors.New("spec.config.mgmtServerCa: set exactly one of generated ({}) or secretRef")
	}
	if ca.SecretRef != nil {
		if key.Namespace != p.Namespace {
			return nil, fmt.Errorf("spec.config.mgmtServerCa.secretRef.namespace %q: the root secret must be in the policy's namespace %s, the one relay-server reads", key.Namespace, p.Namespace)
		}
		if err := checkNotRelaySecret(key.Name, relay); err != nil {
			return nil, err
		}
		var s corev1.Secret
		if err := c.Get(ctx, key, &s); err != nil {
			if apierrors.IsForbidden(err) {
				return nil, rootForbidden(key, err)
			}
			if apierrors.IsNotFound(err) {
				return nil, fmt.Errorf("root secret %s not found: create it with root-cert.pem and key.pem (or tls.crt and tls.key), or use mgmtServerCa.generated", key)
			}
			return nil, fmt.Errorf("failed to read root secret %s: %w", key, err)
		}
		return decodeTrustRoot(&s, now)
	}
	s, _, err := createOnce(ctx, c, api, key, func() (*corev1.Secret, error) {
		root, err := pki.NewRootCA(pki.Options{CommonName: "meshrelay Istio root " + p.Name, Organization: []string{relaysecret.Organization}, TTL: relaysecret.TrustRootLifetime, Now: now})
		if err != nil {
			return nil, err
		}
		keyPEM, err := root.KeyPEM()
		if err != nil {
			return nil, err
		}
		return &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{meshv1alpha1.RootTrustPolicyKey: p.Name}},
			Type:       corev1.SecretTypeOpaque,
			Data:       map[string][]byte{relaysecret.KeyTrustRootCert: root.CAPEM(), relaysecret.KeyTrustRootKey: keyPEM},
		}, nil
	})
	if apierrors.IsForbidden(err) {
		return nil, rootForbidden(key, err)
	}
	if err != nil {
		return nil, fmt.Errorf("root secret: %w", err)
	}
	return decodeTrustRoot(s, now)
}

// relaySecretHolds says what each relay secret relay-server reads holds,
// in the words of checkNotRelaySecret's refusal.
var relaySecretHolds = []struct {
	kind relaysecret.Kind
	what string
}{
	{relaysecret.Root, "the relay root"},
	{relaysecret.Signing, "the CA that signs client certificates"},
	{relaysecret.Server, "relay-server's serving certificate"},
	{relaysecret.Token, "the shared identity token"},
}

// relaySecretsOf returns the secrets relay-server keeps its own CAs and
// credentials in, by name, with what each holds: the names cfg configures
// in its namespace (relaysecret.ServerNames), and the default names too (a
// secret under a default name may still hold what its name says).
func relaySecretsOf(cfg *config.Server) map[string]string {
	names := relaysecret.ServerNames(cfg)
	secrets := map[string]string{}
	for _, s := range relaySecretHolds {
		secrets[s.kind.DefaultName()] = s.what
		if key := names.Of(s.kind); key.Namespace == cfg.Namespace {
			secrets[key.Name] = s.what
		}
	}
	if cfg.ClientIssuerSecret != "" {
		secrets[cfg.ClientIssuerSecret] = "the CAs that may issue client certificates"
	}
	return secrets
}

// checkNotRelaySecret refuses a RootTrustPolicy root taken from one of the
// relay secrets (relaySecretsOf). relay-server may read them, so it would
// sign Istio intermediates, whose keys live in workload clusters, under
// the CA that issues relay identities.
func checkNotRelaySecret(name string, relay map[string]string) error {
	what, ok := relay[name]
	if !ok {
		return nil
	}
	return fmt.Errorf("spec.config.mgmtServerCa.secretRef names %s, which holds %s: a RootTrustPolicy may not use a relay secret, or Istio CAs in the workload clusters would hold intermediates under the CA that issues relay identities; put a root of its own in another secret (root-cert.pem and key.pem), or use mgmtServerCa.generated",
		name, what)
}

// TrustRootRole is the Role through which relay-server reads the root
// secrets of RootTrustPolicies: the manifests ship it empty and bound to
// relay-server, and users add a get rule naming each policy's root, since
// RBAC cannot name a secret before its policy exists.
const TrustRootRole = "relay-server-root-trust"

// rootForbidden says how to let relay-server read the root secret key.
func rootForbidden(key types.NamespacedName, err error) error {
	return fmt.Errorf("relay-server may not read root secret %s: add a rule to Role %s in %s that allows get on secrets with resourceNames [%q] (docs/federated-trust.md shows the overlay patch): %w",
		key, TrustRootRole, key.Namespace, key.Name, err)
}

// decodeTrustRoot reads a root of trust from s through the catalogue:
// root-cert.pem and key.pem, or tls.crt and tls.key. A certificate that is
// not self-signed needs its root in ca.crt (its chain may follow it in the
// certificate key); it must still be allowed to sign one more CA.
func decodeTrustRoot(s *corev1.Secret, now time.Time) (*pki.Certified, error) {
	m, r := relaysecret.Validate(relaysecret.TrustRoot, s.Data, "", relaysecret.Context{Now: now})
	if m == nil {
		return nil, fmt.Errorf("root secret %s: %w", client.ObjectKeyFromObject(s), r.Err())
	}
	return m.Certified(), nil
}

// rootStatus describes root for the policy's status.
func rootStatus(secret types.NamespacedName, root *x509.Certificate) *meshv1alpha1.RootStatus {
	return &meshv1alpha1.RootStatus{Secret: secret.String(), SHA256: pki.Fingerprint(root), NotAfter: metav1.NewTime(root.NotAfter)}
}
