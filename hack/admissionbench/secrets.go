package main

import (
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/pkg/pki"
	"github.com/meshrelay/meshrelay/pkg/relaysecret"
)

// unmatchedSuffix makes a relay secret's name one the webhook
// configuration's matchConditions do not name: the same create, in the
// same namespace, that the API server does not send to relay-webhook.
const unmatchedSuffix = "-unmatched"

// floorSuffix makes a relay secret's name one that only the floor's
// webhook configuration matches.
const floorSuffix = "-floor"

// fixtures are the relay secrets of a workload cluster as relay-server
// and relayctl make them: the root secret relayctl register copies (ca.crt
// alone), and the secrets created again and again, each under its relay
// name and under a name the webhook does not match.
type fixtures struct {
	root *corev1.Secret
	// measured are the secrets whose creates are measured: a client
	// secret (its certificate and the signing intermediate in tls.crt, the
	// root in ca.crt) and a signing secret.
	measured []*corev1.Secret
	// foreign is a client secret for another cluster, which the webhook
	// denies.
	foreign *corev1.Secret
}

func newFixtures() (*fixtures, error) {
	root, err := pki.NewRootCA(pki.Options{CommonName: "relay-root-ca", TTL: 10 * 365 * 24 * time.Hour})
	if err != nil {
		return nil, err
	}
	signing, err := root.NewIntermediateCA(pki.Options{CommonName: "relay-tls-signing-ca", TTL: 5 * 365 * 24 * time.Hour})
	if err != nil {
		return nil, err
	}
	issue := func(cluster string) (*corev1.Secret, error) {
		c, err := signing.IssueClient(pki.Options{DNSNames: []string{cluster}, TTL: 365 * 24 * time.Hour})
		if err != nil {
			return nil, err
		}
		return tlsSecret(config.DefaultClientTLSSecret, c)
	}
	f := &fixtures{root: secret(config.DefaultRootTLSSecret, corev1.SecretTypeOpaque, map[string][]byte{relaysecret.KeyCACert: root.CAPEM()})}
	client, err := issue(clusterName)
	if err != nil {
		return nil, err
	}
	sign, err := tlsSecret(config.DefaultSigningTLSSecret, signing)
	if err != nil {
		return nil, err
	}
	f.measured = []*corev1.Secret{client, sign}
	if f.foreign, err = issue("cluster-2"); err != nil {
		return nil, err
	}
	return f, nil
}

// tlsSecret is a kubernetes.io/tls secret of c: tls.crt its chain below
// the root, tls.key its key, ca.crt the root.
func tlsSecret(name string, c *pki.Certified) (*corev1.Secret, error) {
	key, err := c.KeyPEM()
	if err != nil {
		return nil, err
	}
	return secret(name, corev1.SecretTypeTLS, map[string][]byte{
		relaysecret.KeyTLSCert: c.CertPEM(), relaysecret.KeyTLSKey: key, relaysecret.KeyCACert: c.CAPEM(),
	}), nil
}

func secret(name string, typ corev1.SecretType, data map[string][]byte) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: config.DefaultNamespace, Name: name},
		Type:       typ,
		Data:       data,
	}
}
