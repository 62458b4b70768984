package selfcert

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/meshrelay/meshrelay/pkg/pki"
	"github.com/meshrelay/meshrelay/pkg/relaysecret"
)

// Keys of the webhook's certificate secret: the serving pair, the bundle
// of CAs the API server trusts (newest first) and the newest CA's key.
const (
	keyCAKey = "ca.key"
)

// material is one decoded version of the certificate secret.
type material struct {
	// ca is the newest CA with its key: the first of the bundle, and the one
	// new serving certificates are issued from.
	ca *pki.Certified
	// retired are the older CAs still in the bundle, newest first, so that
	// what they signed verifies until it is replaced.
	retired []*x509.Certificate
	// serving is the serving certificate with its key; tls is the same,
	// ready for crypto/tls.
	serving *pki.Certified
	tls     *tls.Certificate
}

// newMaterial returns the material of the newest CA ca, the older CAs
// retired (newest first) and the serving certificate serving.
func newMaterial(ca *pki.Certified, retired []*x509.Certificate, serving *pki.Certified) *material {
	return &material{ca: ca, retired: retired, serving: serving, tls: tlsCertificate(serving)}
}

// tlsCertificate returns c for crypto/tls: the leaf followed by the
// intermediates above it, not the root, as tls.crt would hold them.
func tlsCertificate(c *pki.Certified) *tls.Certificate {
	out := &tls.Certificate{Certificate: [][]byte{c.Cert.Raw}, PrivateKey: c.Key, Leaf: c.Cert}
	for i := 0; i+1 < len(c.Issuers); i++ {
		out.Certificate = append(out.Certificate, c.Issuers[i].Raw)
	}
	return out
}

// decode reads the secret: ca.crt is the bundle (newest first), ca.key the
// newest CA's key, tls.crt and tls.key the serving pair.
func decode(s *corev1.Secret) (*material, error) {
	cas, err := pki.DecodeCertificates(s.Data[relaysecret.KeyCACert])
	if err != nil {
		return nil, keyError(relaysecret.KeyCACert, err)
	}
	ca, err := pair(s, cas[:1], keyCAKey)
	if err != nil {
		return nil, err
	}
	leaf, err := pki.DecodeCertificates(s.Data[relaysecret.KeyTLSCert])
	if err != nil {
		return nil, keyError(relaysecret.KeyTLSCert, err)
	}
	serving, err := pair(s, leaf, relaysecret.KeyTLSKey)
	if err != nil {
		return nil, err
	}
	return newMaterial(ca, cas[1:], serving), nil
}

// pair returns certs[0] with the key in data[key], which must match it, and
// the rest of certs as its issuers.
func pair(s *corev1.Secret, certs []*x509.Certificate, key string) (*pki.Certified, error) {
	signer, err := pki.DecodePrivateKey(s.Data[key])
	if err == nil {
		err = pki.KeyMatchesCertificate(signer, certs[0])
	}
	if err != nil {
		return nil, keyError(key, err)
	}
	return &pki.Certified{Cert: certs[0], Key: signer, Issuers: certs[1:]}, nil
}

func keyError(key string, err error) error { return fmt.Errorf("data[%s]: %w", key, err) }

// data is the secret's data holding m; tls.crt holds the serving
// certificate alone.
func (m *material) data() (map[string][]byte, error) {
	caKey, err := m.ca.KeyPEM()
	if err != nil {
		return nil, err
	}
	key, err := m.serving.KeyPEM()
	if err != nil {
		return nil, err
	}
	return map[string][]byte{
		relaysecret.KeyCACert:  m.bundle(),
		keyCAKey:               caKey,
		relaysecret.KeyTLSCert: pki.EncodeCertificates(m.serving.Cert),
		relaysecret.KeyTLSKey:  key,
	}, nil
}

// cas returns the bundle's CAs, newest first.
func (m *material) cas() []*x509.Certificate {
	return append([]*x509.Certificate{m.ca.Cert}, m.retired...)
}

// bundle is the caBundle the webhook configurations must carry.
func (m *material) bundle() []byte { return pki.EncodeCertificates(m.cas()...) }

// signedByNewest reports whether the serving certificate comes from the
// newest CA.
func (m *material) signedByNewest() bool {
	return m.serving.Cert.CheckSignatureFrom(m.ca.Cert) == nil
}

// newCA makes a self-signed CA for the webhook, valid for o.CALifetime
// from now, that signs serving certificates and no other CA. Its common
// name carries the time of issue, so that the CAs of a bundle differ.
func newCA(o *Options, now time.Time) (*pki.Certified, error) {
	ca, err := pki.NewRootCA(pki.Options{
		CommonName: fmt.Sprintf("%s.%s webhook CA %d", o.ServiceName, o.Namespace, now.Unix()),
		LeavesOnly: true,
		TTL:        o.CALifetime,
		Now:        now,
	})
	if err != nil {
		return nil, fmt.Errorf("failed to make the webhook CA: %w", err)
	}
	return ca, nil
}

// newServing issues the serving certificate from ca, for the names of
// servingNames and the addresses of o. It never outlives ca.
func newServing(o *Options, ca *pki.Certified, now time.Time) (*pki.Certified, error) {
	serving, err := ca.IssueServer(pki.Options{
		DNSNames:    servingNames(o),
		IPAddresses: o.IPAddresses,
		TTL:         o.ServingLifetime,
		Now:         now,
	})
	if err != nil {
		return nil, fmt.Errorf("failed to issue the webhook serving certificate: %w", err)
	}
	return serving, nil
}

// servingNames are the serving certificate's DNS names: the Service's
// "<service>.<namespace>.svc", the same under ".cluster.local", then the
// extra names of o. The first is the common name.
func servingNames(o *Options) []string {
	svc := o.ServiceName + "." + o.Namespace + ".svc"
	return append([]string{svc, svc + ".cluster.local"}, o.ExtraDNSNames...)
}

// checkServingNames returns an error unless every name servingNames gives
// is a DNS name a serving certificate may carry.
func checkServingNames(o *Options) error {
	for _, name := range servingNames(o) {
		if err := pki.CheckDNSName(name, true); err != nil {
			return fmt.Errorf("serving certificate name: %w", err)
		}
	}
	return nil
}
