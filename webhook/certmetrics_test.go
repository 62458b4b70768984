package webhook

import (
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/meshrelay/meshrelay/pkg/pki"
)

// TestFilesCertificatesFindTheServingCertificateAndItsCA reads a serving
// certificate from files as --certificates=files serves it: its CA from
// ca.crt, from the chain in tls.crt, or itself when it is self-signed.
func TestFilesCertificatesFindTheServingCertificateAndItsCA(t *testing.T) {
	now := time.Now()
	root, err := pki.NewRootCA(pki.Options{CommonName: "webhook-ca", TTL: 48 * time.Hour, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	other, err := pki.NewRootCA(pki.Options{CommonName: "unrelated", TTL: 72 * time.Hour, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	inter, err := root.NewIntermediateCA(pki.Options{CommonName: "webhook-intermediate", TTL: 36 * time.Hour, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := root.IssueServer(pki.Options{DNSNames: []string{"relay-webhook.meshrelay-system.svc"}, TTL: time.Hour, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	chained, err := inter.IssueServer(pki.Options{DNSNames: []string{"relay-webhook.meshrelay-system.svc"}, TTL: time.Hour, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	selfSigned := selfSignedLeaf(t, now)
	enc := func(certs ...*x509.Certificate) []byte { return pki.EncodeCertificates(certs...) }
	for _, tc := range []struct {
		name          string
		tlsCrt, caCrt []byte
		serving, ca   *x509.Certificate
	}{
		{"the CA that signed it is taken from ca.crt, not another one there", enc(leaf.Cert), enc(other.Cert, root.Cert), leaf.Cert, root.Cert},
		{"without ca.crt the CA is the certificate of tls.crt's chain that signed it", enc(chained.Cert, inter.Cert), nil, chained.Cert, inter.Cert},
		{"a self-signed serving certificate that is no CA is its own CA, as cert-manager's SelfSigned issuer makes it", enc(selfSigned), enc(selfSigned), selfSigned, selfSigned},
		{"no CA that signed it: the serving certificate alone", enc(leaf.Cert), enc(other.Cert), leaf.Cert, nil},
		{"no tls.crt: nothing", nil, enc(root.Cert), nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, data := range map[string][]byte{"tls.crt": tc.tlsCrt, "ca.crt": tc.caCrt} {
				if data != nil {
					if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
						t.Fatal(err)
					}
				}
			}
			serving, ca := filesCertificates(dir)()
			if !serving.Equal(tc.serving) && !(serving == nil && tc.serving == nil) {
				t.Errorf("serving %v, want %v", subject(serving), subject(tc.serving))
			}
			if !ca.Equal(tc.ca) && !(ca == nil && tc.ca == nil) {
				t.Errorf("CA %v, want %v", subject(ca), subject(tc.ca))
			}
		})
	}
}

// selfSignedLeaf is a serving certificate signed by its own key that is no
// CA.
func selfSignedLeaf(t *testing.T, now time.Time) *x509.Certificate {
	t.Helper()
	key, err := pki.GenerateKey(pki.KeySpec{})
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "relay-webhook"}, DNSNames: []string{"relay-webhook.meshrelay-system.svc"},
		NotBefore: now, NotAfter: now.Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func subject(c *x509.Certificate) string {
	if c == nil {
		return "none"
	}
	return c.Subject.String()
}
