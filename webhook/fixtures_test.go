package webhook_test

import (
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/pkg/pki"
	"github.com/meshrelay/meshrelay/pkg/relaysecret"
)

const (
	year    = 365 * 24 * time.Hour
	cluster = "cluster-1"
)

// pkiFixture is a relay PKI as relay-server makes it: a root, a signing
// intermediate, and leaves signed by the intermediate. The CAs date from two
// days ago so that leaves may be issued in the past (expired ones).
type pkiFixture struct {
	now     time.Time
	root    *pki.Certified
	signing *pki.Certified
}

func newPKI(t testing.TB) *pkiFixture {
	t.Helper()
	now := time.Now()
	root, err := pki.NewRootCA(pki.Options{CommonName: "relay-root", TTL: 10 * year, Now: now.Add(-48 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	signing, err := root.NewIntermediateCA(pki.Options{CommonName: "relay-signing", TTL: 5 * year, Now: now.Add(-47 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	return &pkiFixture{now: now, root: root, signing: signing}
}

func (f *pkiFixture) client(t testing.TB, name string, opts pki.Options) *pki.Certified {
	t.Helper()
	if opts.DNSNames == nil {
		opts.DNSNames = []string{name}
	}
	if opts.TTL == 0 {
		opts.TTL = year
	}
	c, err := f.signing.IssueClient(opts)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (f *pkiFixture) server(t testing.TB, names ...string) *pki.Certified {
	t.Helper()
	c, err := f.signing.IssueServer(pki.Options{DNSNames: names, TTL: year})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// rawLeaf makes a client certificate signed by the intermediate with any
// DNS names, which pkg/pki itself refuses to issue (underscores).
func (f *pkiFixture) rawLeaf(t testing.TB, dnsNames ...string) *pki.Certified {
	t.Helper()
	key, err := pki.GenerateKey(pki.KeySpec{})
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: dnsNames[0]},
		DNSNames:     dnsNames,
		NotBefore:    f.now.Add(-time.Hour),
		NotAfter:     f.now.Add(year),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, f.signing.Cert, key.Public(), f.signing.Key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &pki.Certified{Cert: cert, Key: key, Issuers: append([]*x509.Certificate{f.signing.Cert}, f.signing.Issuers...)}
}

// tlsSecret is a kubernetes.io/tls secret of c with ca.crt = ca.
func tlsSecret(t testing.TB, ns, name string, c *pki.Certified, ca []byte) *corev1.Secret {
	t.Helper()
	key, err := c.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	return &corev1.Secret{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Type:       corev1.SecretTypeTLS,
		Data:       map[string][]byte{relaysecret.KeyTLSCert: c.CertPEM(), relaysecret.KeyTLSKey: key, relaysecret.KeyCACert: ca},
	}
}

func (f *pkiFixture) rootSecret(t testing.TB) *corev1.Secret {
	return tlsSecret(t, config.DefaultNamespace, config.DefaultRootTLSSecret, f.root, f.root.CAPEM())
}

func tokenSecret(token string) *corev1.Secret {
	return &corev1.Secret{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{Namespace: config.DefaultNamespace, Name: config.DefaultTokenSecret},
		Type:       corev1.SecretTypeOpaque,
		Data:       map[string][]byte{config.DefaultTokenKey: []byte(token)},
	}
}

func toYAML(t testing.TB, obj any) string {
	t.Helper()
	b, err := yaml.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
