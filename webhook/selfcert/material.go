package selfcert

import (
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/meshrelay/meshrelay/pkg/pki"
)

// Keys of the webhook's certificate secret: the serving pair, the bundle
// of CAs the API server trusts (newest first) and the newest CA's key.
const (
	keyCAKey = "ca.key"
)

// material is one decoded version of the certificate secret.
type material struct {
	// cas is the bundle, newest first; caKey signs with cas[0].
	cas     []*x509.Certificate
	caKey   crypto.Signer
	serving *tls.Certificate
	leaf    *x509.Certificate
}

func decode(s *corev1.Secret) (*material, error) {
	cas, err := pki.DecodeCertificates(s.Data[pki.KeyCACert])
	if err != nil {
		return nil, &pki.SecretError{Key: pki.KeyCACert, Err: err}
	}
	caKey, err := pki.DecodePrivateKey(s.Data[keyCAKey])
	if err != nil {
		return nil, &pki.SecretError{Key: keyCAKey, Err: err}
	}
	if err := pki.KeyMatchesCertificate(caKey, cas[0]); err != nil {
		return nil, &pki.SecretError{Key: keyCAKey, Err: err}
	}
	kp, err := pki.DecodeKeyPair(s.Data[pki.KeyTLSCert], s.Data[pki.KeyTLSKey], nil)
	if err != nil {
		return nil, err
	}
	return &material{cas: cas, caKey: caKey, serving: kp.TLSCertificate(), leaf: kp.Cert}, nil
}

func (m *material) data() (map[string][]byte, error) {
	caKey, err := pki.EncodePrivateKey(m.caKey)
	if err != nil {
		return nil, err
	}
	key, err := pki.EncodePrivateKey(m.serving.PrivateKey.(crypto.Signer))
	if err != nil {
		return nil, err
	}
	return map[string][]byte{
		pki.KeyCACert:  pki.EncodeCertificates(m.cas...),
		keyCAKey:       caKey,
		pki.KeyTLSCert: pki.EncodeCertificates(m.leaf),
		pki.KeyTLSKey:  key,
	}, nil
}

// bundle is the caBundle the webhook configurations must carry.
func (m *material) bundle() []byte { return pki.EncodeCertificates(m.cas...) }

// signedByNewest reports whether the serving certificate comes from the
// newest CA.
func (m *material) signedByNewest() bool {
	return m.leaf.CheckSignatureFrom(m.cas[0]) == nil
}

var errNoCA = errors.New("no CA to sign with")

// newCA makes a self-signed CA for the webhook.
func newCA(o *Options, now time.Time) (*x509.Certificate, crypto.Signer, error) {
	key, err := pki.GenerateKey(pki.KeySpec{})
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: fmt.Sprintf("%s.%s webhook CA %d", o.ServiceName, o.Namespace, now.Unix())},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(o.CALifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, fmt.Errorf("failed to make the webhook CA: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	return cert, key, err
}

// newServing issues the serving certificate from ca, for the Service's
// names and the extra names and addresses of o. It never outlives ca.
func newServing(o *Options, ca *x509.Certificate, caKey crypto.Signer, now time.Time) (*tls.Certificate, *x509.Certificate, error) {
	if ca == nil {
		return nil, nil, errNoCA
	}
	key, err := pki.GenerateKey(pki.KeySpec{})
	if err != nil {
		return nil, nil, err
	}
	svc := o.ServiceName + "." + o.Namespace + ".svc"
	notAfter := now.Add(o.ServingLifetime)
	if notAfter.After(ca.NotAfter) {
		notAfter = ca.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: svc},
		DNSNames:     append([]string{svc, svc + ".cluster.local"}, o.ExtraDNSNames...),
		IPAddresses:  append([]net.IP(nil), o.IPAddresses...),
		NotBefore:    now.Add(-time.Minute),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, key.Public(), caKey)
	if err != nil {
		return nil, nil, fmt.Errorf("failed to issue the webhook serving certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, leaf, nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}
