package relaysecret

import (
	"bytes"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"slices"

	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/meshrelay/meshrelay/pkg/pki"
)

// Material is what a relay secret holds, decoded.
type Material struct {
	Kind Kind
	// Cert is the certificate the secret is about: the first of tls.crt
	// (ca-cert.pem for IstioCA, root-cert.pem or tls.crt for TrustRoot);
	// for Root, tls.crt's first or else ca.crt's first.
	Cert *x509.Certificate
	// Chain is the rest of the certificate key: the issuers above Cert.
	Chain []*x509.Certificate
	// Key is Cert's private key; nil when the secret holds none (a Root
	// without tls.key).
	Key crypto.Signer
	// Roots are the CAs the chain verifies to: ca.crt (root-cert.pem for
	// IstioCA); for Root, the roots it publishes.
	Roots []*x509.Certificate
	// Token is the identity token, as stored.
	Token []byte
	// Previous are the signing CAs this one replaced (previous.crt of a
	// signing secret), whose client certificates are still admitted.
	Previous []*x509.Certificate

	// certKey and keyKey are the data keys Cert and Key (or Token) came
	// from.
	certKey, keyKey string
	// rootsFromContext is set when the secret has no ca.crt and Roots are
	// the check context's (caFromContext).
	rootsFromContext bool
}

// TLSCertificate returns Cert, its chain and Key, ready for crypto/tls.
func (m *Material) TLSCertificate() *tls.Certificate {
	cert := &tls.Certificate{PrivateKey: m.Key, Leaf: m.Cert, Certificate: [][]byte{m.Cert.Raw}}
	for _, c := range m.Chain {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	return cert
}

// Issuer returns the CA that issued Cert: the first of Chain, Roots (ca.crt)
// and then extraRoots, the roots the caller trusts besides the secret's
// own, whose subject is Cert's issuer and whose key signed it. The error
// says to put the issuer in tls.crt or its root in ca.crt.
func (m *Material) Issuer(extraRoots ...*x509.Certificate) (*x509.Certificate, error) {
	candidates := make([]*x509.Certificate, 0, len(m.Chain)+len(m.Roots)+len(extraRoots))
	candidates = append(append(append(candidates, m.Chain...), m.Roots...), extraRoots...)
	return pki.DirectIssuer(m.Cert, candidates)
}

// Certified returns the material as a CA that can issue: its issuers are
// Chain followed by the first root, unless Chain already ends with that
// root or Cert is it.
func (m *Material) Certified() *pki.Certified {
	issuers := slices.Clone(m.Chain)
	last := m.Cert
	if len(issuers) > 0 {
		last = issuers[len(issuers)-1]
	}
	if len(m.Roots) > 0 && !m.Roots[0].Equal(last) {
		issuers = append(issuers, m.Roots[0])
	}
	return &pki.Certified{Cert: m.Cert, Key: m.Key, Issuers: issuers}
}

// Decode reads the data of a secret of kind k: every key the kind needs is
// present and decodes, and a private key matches its certificate. tokenKey
// names the token's key (Token only). What decoded is returned even when
// something else did not, so that a caller can name more than the first
// problem; errs says what is missing or broken, each at its data key.
func Decode(k Kind, data map[string][]byte, tokenKey string) (*Material, field.ErrorList) {
	d := &decoder{m: &Material{Kind: k}, data: data}
	switch k {
	case Root:
		d.root()
	case Signing, Server, Client:
		d.pair(KeyTLSCert, KeyTLSKey, "add the PEM certificate chain")
		d.roots(KeyCACert, caFix(k))
		if k == Signing && present(data[KeyPreviousCACert]) {
			d.m.Previous = d.certs(KeyPreviousCACert, "")
		}
	case Token:
		d.token(tokenKey)
	case IstioCA:
		d.istio()
	case TrustRoot:
		d.trustRoot()
	}
	return d.m, d.errs
}

func caFix(k Kind) string {
	if k == Signing {
		return "add the root CA certificate that signed the intermediate"
	}
	return "add the root CA certificate that signed the chain"
}

type decoder struct {
	m    *Material
	data map[string][]byte
	errs field.ErrorList
}

func (d *decoder) fail(key string, format string, args ...any) {
	d.errs = append(d.errs, invalid(key, format, args...))
}

func present(b []byte) bool { return len(bytes.TrimSpace(b)) > 0 }

// certs decodes data[key]; nil with an error recorded when it is missing
// (saying fix) or does not decode.
func (d *decoder) certs(key, fix string) []*x509.Certificate {
	if !present(d.data[key]) {
		d.fail(key, "missing: %s", fix)
		return nil
	}
	certs, err := pki.DecodeCertificates(d.data[key])
	if err != nil {
		d.fail(key, "%v", err)
		return nil
	}
	return certs
}

// key decodes data[key] and matches it to cert, when cert decoded.
func (d *decoder) key(key, fix string, cert *x509.Certificate) {
	if !present(d.data[key]) {
		d.fail(key, "missing: %s", fix)
		return
	}
	signer, err := pki.DecodePrivateKey(d.data[key])
	if err == nil && cert != nil {
		err = pki.KeyMatchesCertificate(signer, cert)
	}
	if err != nil {
		d.fail(key, "%v", err)
		return
	}
	d.m.Key, d.m.keyKey = signer, key
}

// pair decodes a certificate chain and its key.
func (d *decoder) pair(certKey, keyKey, fix string) {
	certs := d.certs(certKey, fix)
	if certs != nil {
		d.m.Cert, d.m.Chain, d.m.certKey = certs[0], certs[1:], certKey
	}
	d.key(keyKey, "add the private key of "+certKey, d.m.Cert)
}

func (d *decoder) roots(key, fix string) {
	d.m.Roots = d.certs(key, fix)
}

// root decodes relay-root-tls-secret: ca.crt, and tls.crt and tls.key when
// present.
func (d *decoder) root() {
	d.roots(KeyCACert, "add the root CA certificate in PEM")
	if len(d.m.Roots) > 0 {
		d.m.Cert, d.m.certKey = d.m.Roots[0], KeyCACert
	}
	if present(d.data[KeyTLSCert]) {
		if certs := d.certs(KeyTLSCert, ""); certs != nil {
			d.m.Cert, d.m.Chain, d.m.certKey = certs[0], certs[1:], KeyTLSCert
		} else {
			d.m.Cert = nil
		}
	}
	if present(d.data[KeyTLSKey]) {
		d.key(KeyTLSKey, "", d.m.Cert)
	}
}

func (d *decoder) token(key string) {
	tok := d.data[key]
	if !present(tok) {
		d.fail(key, "missing or empty: copy the identity token from the management cluster")
		return
	}
	d.m.Token, d.m.keyKey = tok, key
}

// istio decodes cacerts: ca-cert.pem, ca-key.pem, cert-chain.pem (the CA
// first, then its issuers) and root-cert.pem.
func (d *decoder) istio() {
	ca := d.certs(pki.IstioCACertKey, "add Istio's intermediate CA certificate in PEM")
	if ca != nil {
		d.m.Cert, d.m.certKey = ca[0], pki.IstioCACertKey
	}
	d.roots(pki.IstioRootCertKey, "add the root CA certificate the mesh trusts")
	chain := d.certs(pki.IstioCertChainKey, "add ca-cert.pem followed by its issuers up to the root")
	d.key(pki.IstioCAKeyKey, "add the private key of ca-cert.pem", d.m.Cert)
	if chain == nil || d.m.Cert == nil {
		return
	}
	if !chain[0].Equal(d.m.Cert) {
		d.fail(pki.IstioCertChainKey, "does not start with ca-cert.pem's certificate %q: put ca-cert.pem first, then its issuers", d.m.Cert.Subject.CommonName)
		return
	}
	d.m.Chain = chain[1:]
}

// trustRoot decodes a root of trust: root-cert.pem and key.pem, or tls.crt
// and tls.key; a CA that is not self-signed has its root in ca.crt.
func (d *decoder) trustRoot() {
	certKey, keyKey := KeyTrustRootCert, KeyTrustRootKey
	if !present(d.data[certKey]) && present(d.data[KeyTLSCert]) {
		certKey, keyKey = KeyTLSCert, KeyTLSKey
	}
	if !present(d.data[certKey]) {
		d.fail(certKey, "missing, and so is %s: add the root certificate and its key", KeyTLSCert)
		return
	}
	d.pair(certKey, keyKey, "")
	if d.m.Cert != nil && d.m.Cert.CheckSignatureFrom(d.m.Cert) != nil {
		if !present(d.data[KeyCACert]) {
			d.fail(KeyCACert, "missing: %s is not self-signed, so ca.crt must hold its root", certKey)
			return
		}
		d.roots(KeyCACert, "")
	}
}
