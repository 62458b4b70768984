package certgen

import (
	"crypto/x509"

	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/pkg/pki"
	"github.com/meshrelay/meshrelay/pkg/relaysecret"
)

// ClusterSecrets are the secrets to apply to one cluster.
type ClusterSecrets struct {
	// Cluster is Management or a workload cluster's name.
	Cluster string
	Secrets []corev1.Secret
}

// Generate makes the CAs of opts.Architecture and returns the secrets of
// the management cluster followed by those of each workload cluster, in the
// order of opts.Clusters:
//   - management: relay-root-tls-secret (the relay root with its key, as
//     relay-server would make it), relay-tls-signing-secret (the
//     intermediate, its key, the root) and relay-server-tls-secret (DNS names
//     "*.<namespace>" and the authority; the leaf and the intermediate, its
//     key, the root);
//   - each workload cluster: relay-root-tls-secret (ca.crt only),
//     relay-client-tls-secret (DNS name = the cluster; the leaf and the
//     intermediate, its key, the root) and Istio's cacerts (ca-cert.pem,
//     ca-key.pem, cert-chain.pem up to the mesh root, root-cert.pem).
//
// The separate mesh root's key (SeparateRoots) is not kept: every workload
// cluster's cacerts holds the same mesh intermediate, which a new cluster
// copies. Every secret is decoded and its chain verified before Generate
// returns.
func Generate(opts Options) ([]ClusterSecrets, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	opts = opts.withDefaults()
	ca, err := newAuthorities(opts.Architecture, opts.Now)
	if err != nil {
		return nil, err
	}
	mgmt, err := managementSecrets(ca, opts)
	if err != nil {
		return nil, err
	}
	sets := []ClusterSecrets{{Cluster: Management, Secrets: mgmt}}
	for _, cluster := range opts.Clusters {
		secrets, err := workloadSecrets(ca, cluster, opts)
		if err != nil {
			return nil, err
		}
		sets = append(sets, ClusterSecrets{Cluster: cluster, Secrets: secrets})
	}
	if err := check(sets, opts); err != nil {
		return nil, fmt.Errorf("generated secrets failed their own check: %w", err)
	}
	return sets, nil
}

func managementSecrets(ca *authorities, opts Options) ([]corev1.Secret, error) {
	server, err := ca.relaySigning.IssueServer(pki.Options{
		CommonName: opts.Authority,
		DNSNames:   serverNames(opts),
		TTL:        relaysecret.ServerLifetime,
		Now:        opts.Now,
	})
	if err != nil {
		return nil, fmt.Errorf("failed to issue the server certificate: %w", err)
	}
	var out []corev1.Secret
	for _, s := range []struct {
		name string
		c    *pki.Certified
	}{
		{config.DefaultRootTLSSecret, ca.relayRoot},
		{config.DefaultSigningTLSSecret, ca.relaySigning},
		{config.DefaultServerTLSSecret, server},
	} {
		sec, err := tlsSecret(opts.Namespace, s.name, s.c)
		if err != nil {
			return nil, err
		}
		out = append(out, sec)
	}
	return out, nil
}

// serverNames are the server certificate's DNS names: "*.<namespace>" and
// the authority, once each.
func serverNames(opts Options) []string {
	names := []string{"*." + opts.Namespace}
	if opts.Authority != names[0] {
		names = append(names, opts.Authority)
	}
	return names
}

func workloadSecrets(ca *authorities, cluster string, opts Options) ([]corev1.Secret, error) {
	client, err := ca.relaySigning.IssueClient(pki.Options{
		DNSNames: []string{cluster},
		TTL:      config.DefaultClientCertificateTTL,
		Now:      opts.Now,
	})
	if err != nil {
		return nil, fmt.Errorf("failed to issue the client certificate of cluster %q: %w", cluster, err)
	}
	clientSec, err := tlsSecret(opts.Namespace, config.DefaultClientTLSSecret, client)
	if err != nil {
		return nil, err
	}
	cacerts, err := pki.IstioCAData(ca.meshCA.Key, append([]*x509.Certificate{ca.meshCA.Cert}, ca.meshCA.Issuers...), opts.Now)
	if err != nil {
		return nil, fmt.Errorf("cacerts of cluster %q: %w", cluster, err)
	}
	return []corev1.Secret{
		newSecret(opts.Namespace, config.DefaultRootTLSSecret, corev1.SecretTypeOpaque, map[string][]byte{
			relaysecret.KeyCACert: ca.relayRoot.CAPEM(),
		}),
		clientSec,
		newSecret(opts.IstioNamespace, config.DefaultIstioCASecret, corev1.SecretTypeOpaque, cacerts),
	}, nil
}

// tlsSecret returns c as a kubernetes.io/tls secret: tls.crt is c and the
// intermediates above it, tls.key its key, ca.crt the root.
func tlsSecret(namespace, name string, c *pki.Certified) (corev1.Secret, error) {
	key, err := c.KeyPEM()
	if err != nil {
		return corev1.Secret{}, fmt.Errorf("secret %s/%s: %w", namespace, name, err)
	}
	return newSecret(namespace, name, corev1.SecretTypeTLS, map[string][]byte{
		relaysecret.KeyTLSCert: c.CertPEM(),
		relaysecret.KeyTLSKey:  key,
		relaysecret.KeyCACert:  c.CAPEM(),
	}), nil
}

func newSecret(namespace, name string, typ corev1.SecretType, data map[string][]byte) corev1.Secret {
	return corev1.Secret{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
		Type:       typ,
		Data:       data,
	}
}
