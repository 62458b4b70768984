// Package relaysecrettest holds one table of good and bad relay secrets
// that every consumer of the relay-secret catalogue judges in its own
// tests: the webhook, relay-server, relay-agent and relayctl must all give
// the verdict the table states.
package relaysecrettest

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"testing"
	"time"

	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/pkg/pki"
	"github.com/meshrelay/meshrelay/pkg/relaysecret"
)

// Cluster and Authority are what the cases are judged for.
const (
	Cluster   = "cluster-1"
	Authority = config.DefaultAuthority
)

// Case is one secret and the verdict every consumer must give.
type Case struct {
	// Name reads as the behaviour: "a client certificate with an RSA-1024
	// key is refused".
	Name string
	Kind relaysecret.Kind
	Data map[string][]byte
	// OK is the verdict: usable (admitted, loaded, reported fine) or not.
	OK bool
}

// Fixture is a relay PKI made for the cases: a root, a signing CA under
// it, and the time they are judged at.
type Fixture struct {
	Root    *pki.Certified
	Signing *pki.Certified
	Now     time.Time
	// RootData is relay-root-tls-secret's data for Root.
	RootData map[string][]byte
}

// New makes the fixture.
func New(t testing.TB) *Fixture {
	t.Helper()
	now := time.Now()
	root, err := pki.NewRootCA(pki.Options{CommonName: "test-root", TTL: 48 * time.Hour, Now: now})
	must(t, err)
	signing, err := root.NewIntermediateCA(pki.Options{CommonName: "test-signing", TTL: 24 * time.Hour, Now: now})
	must(t, err)
	return &Fixture{Root: root, Signing: signing, Now: now, RootData: map[string][]byte{relaysecret.KeyCACert: root.CertPEM()}}
}

// Context is the check context the cases are judged in.
func (f *Fixture) Context() relaysecret.Context {
	return relaysecret.Context{Authority: Authority, Cluster: Cluster, Roots: []*x509.Certificate{f.Root.Cert}, Now: f.Now}
}

// Cases returns the table.
func (f *Fixture) Cases(t testing.TB) []Case {
	t.Helper()
	client := func(o pki.Options) map[string][]byte {
		o.Now, o.TTL = f.Now, time.Hour
		c, err := f.Signing.IssueClient(o)
		must(t, err)
		return f.TLSData(t, c)
	}
	server, err := f.Signing.IssueServer(pki.Options{DNSNames: []string{"*.gloo-mesh"}, TTL: time.Hour, Now: f.Now})
	must(t, err)
	wrongServer, err := f.Signing.IssueServer(pki.Options{DNSNames: []string{"relay.example.com"}, TTL: time.Hour, Now: f.Now})
	must(t, err)
	otherRoot, err := pki.NewRootCA(pki.Options{CommonName: "other-root", TTL: time.Hour, Now: f.Now})
	must(t, err)
	foreign, err := otherRoot.IssueClient(pki.Options{DNSNames: []string{Cluster}, TTL: time.Hour, Now: f.Now})
	must(t, err)
	expiredCert, err := f.Signing.IssueClient(pki.Options{DNSNames: []string{Cluster}, TTL: time.Hour, Now: f.Now.Add(-3 * time.Hour), Backdate: -1})
	must(t, err)
	expired := f.TLSData(t, expiredCert)
	mismatched := client(pki.Options{DNSNames: []string{Cluster}})
	mismatched[relaysecret.KeyTLSKey] = client(pki.Options{DNSNames: []string{Cluster}})[relaysecret.KeyTLSKey]

	return []Case{
		{Name: "the root is usable", Kind: relaysecret.Root, Data: f.RootData, OK: true},
		{Name: "the signing CA is usable", Kind: relaysecret.Signing, Data: f.TLSData(t, f.Signing), OK: true},
		{Name: "a signing CA made from the documented openssl example (SAN *.gloo-mesh, client and server auth) is usable",
			Kind: relaysecret.Signing, Data: f.TLSData(t, f.referenceSigningCA(t)), OK: true},
		{Name: "a server certificate covering the authority is usable", Kind: relaysecret.Server, Data: f.TLSData(t, server), OK: true},
		{Name: "a server certificate without ca.crt, under the stored root, is usable", Kind: relaysecret.Server, Data: without(f.TLSData(t, server), relaysecret.KeyCACert), OK: true},
		{Name: "a signing CA without ca.crt, under the stored root, is usable", Kind: relaysecret.Signing, Data: without(f.TLSData(t, f.Signing), relaysecret.KeyCACert), OK: true},
		{Name: "a server certificate that does not cover the authority is refused", Kind: relaysecret.Server, Data: f.TLSData(t, wrongServer)},
		{Name: "a client certificate for this cluster is usable", Kind: relaysecret.Client, Data: client(pki.Options{DNSNames: []string{Cluster}}), OK: true},
		{Name: "a client certificate with an RSA-1024 key is refused", Kind: relaysecret.Client, Data: f.weakClient(t)},
		{Name: "a client certificate for another cluster is refused", Kind: relaysecret.Client, Data: client(pki.Options{DNSNames: []string{"cluster-2"}})},
		{Name: "an expired client certificate is refused", Kind: relaysecret.Client, Data: expired},
		{Name: "a client key that belongs to another certificate is refused", Kind: relaysecret.Client, Data: mismatched},
		{Name: "a client certificate from another root is refused", Kind: relaysecret.Client, Data: f.tlsDataWithRoot(t, foreign, otherRoot)},
		{Name: "a client certificate without ca.crt, under the stored root, is usable", Kind: relaysecret.Client, Data: without(client(pki.Options{DNSNames: []string{Cluster}}), relaysecret.KeyCACert), OK: true},
		{Name: "a client certificate without ca.crt, from another root, is refused", Kind: relaysecret.Client, Data: without(f.tlsDataWithRoot(t, foreign, otherRoot), relaysecret.KeyCACert)},
		{Name: "a signing secret that is not a CA is refused", Kind: relaysecret.Signing, Data: client(pki.Options{DNSNames: []string{Cluster}})},
		{Name: "a token is usable", Kind: relaysecret.Token, Data: map[string][]byte{config.DefaultTokenKey: []byte("0123456789abcdef0123456789abcdef0123")}, OK: true},
		{Name: "an empty token is refused", Kind: relaysecret.Token, Data: map[string][]byte{config.DefaultTokenKey: []byte(" \n")}},
	}
}

// TLSData is the tls.crt, tls.key and ca.crt of c, whose root is the
// fixture's.
func (f *Fixture) TLSData(t testing.TB, c *pki.Certified) map[string][]byte {
	t.Helper()
	return f.tlsDataWithRoot(t, c, f.Root)
}

func (f *Fixture) tlsDataWithRoot(t testing.TB, c, root *pki.Certified) map[string][]byte {
	t.Helper()
	key, err := c.KeyPEM()
	must(t, err)
	return map[string][]byte{relaysecret.KeyTLSCert: c.CertPEM(), relaysecret.KeyTLSKey: key, relaysecret.KeyCACert: root.CertPEM()}
}

// referenceSigningCA is the signing CA that the openssl example
// configuration of the compatible product's "Certificate architectures"
// page makes: CA:TRUE, keyCertSign, client and server auth, DNS *.gloo-mesh.
func (f *Fixture) referenceSigningCA(t testing.TB) *pki.Certified {
	t.Helper()
	key, err := pki.GenerateKey(pki.RSA2048)
	must(t, err)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(7),
		Subject:               pkix.Name{CommonName: "gloo-mesh-agent-signing-ca"},
		NotBefore:             f.Now.Add(-time.Minute),
		NotAfter:              f.Now.Add(12 * time.Hour),
		BasicConstraintsValid: true,
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		DNSNames:              []string{"*.gloo-mesh"},
	}
	return f.sign(t, tmpl, key)
}

// weakClient is a client certificate for Cluster with an RSA-1024 key,
// signed by the fixture's signing CA, as openssl makes one on request.
func (f *Fixture) weakClient(t testing.TB) map[string][]byte {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 1024)
	must(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(8),
		Subject:      pkix.Name{CommonName: Cluster},
		NotBefore:    f.Now.Add(-time.Minute),
		NotAfter:     f.Now.Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		DNSNames:     []string{Cluster},
	}
	return f.TLSData(t, f.sign(t, tmpl, key))
}

func (f *Fixture) sign(t testing.TB, tmpl *x509.Certificate, key crypto.Signer) *pki.Certified {
	t.Helper()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, f.Signing.Cert, key.Public(), f.Signing.Key)
	must(t, err)
	cert, err := x509.ParseCertificate(der)
	must(t, err)
	return &pki.Certified{Cert: cert, Key: key, Issuers: []*x509.Certificate{f.Signing.Cert, f.Root.Cert}}
}

func without(data map[string][]byte, key string) map[string][]byte {
	delete(data, key)
	return data
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
