package pki

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"slices"
	"time"
)

// Policy says what an Issuer signs.
type Policy struct {
	// Role of the certificates issued: RoleClient or RoleServer.
	Role Role
	// TTL is the lifetime of issued certificates, capped by the issuer's
	// own NotAfter.
	TTL time.Duration
	// Backdate moves NotBefore earlier for clock skew; zero means
	// DefaultBackdate, negative means none.
	Backdate time.Duration
	// AllowedKeys are the CSR keys accepted; empty means DefaultAllowedKeys.
	AllowedKeys []KeySpec
}

// Identity is what the caller authenticated: the names the certificate
// will carry, whatever the CSR asks for, and the registration it is bound
// to.
type Identity struct {
	DNSNames []string
	// ClusterUID, when set, binds the certificate to that KubernetesCluster
	// UID (see ClusterUID); it must pass CheckClusterUID.
	ClusterUID string
}

// Issuer signs CSRs with a CA under a Policy.
type Issuer struct {
	ca      *Certified
	policy  Policy
	caPEM   []byte
	chain   []*x509.Certificate
	interPM []byte
}

// NewIssuer returns an issuer signing with ca under p. It checks once, at
// now, what every signature relies on: ca is a CA allowed to sign, its key
// matches its certificate, and its chain verifies to its root.
func NewIssuer(ca *Certified, p Policy, now time.Time) (*Issuer, error) {
	if p.Role != RoleClient && p.Role != RoleServer {
		return nil, fmt.Errorf("policy role %s: an issuer signs client or server certificates", p.Role)
	}
	if p.TTL <= 0 {
		return nil, fmt.Errorf("policy TTL %s must be positive", p.TTL)
	}
	if len(p.AllowedKeys) == 0 {
		p.AllowedKeys = DefaultAllowedKeys
	}
	if err := KeyMatchesCertificate(ca.Key, ca.Cert); err != nil {
		return nil, fmt.Errorf("signing CA: %w", err)
	}
	caRole := RoleSigningCA
	if len(ca.Issuers) == 0 {
		caRole = RoleRoot
	}
	root := ca.Root()
	if _, err := VerifyChain(ca.Cert, ca.Issuers, []*x509.Certificate{root}, caRole, now); err != nil {
		return nil, fmt.Errorf("signing CA: %w", err)
	}
	if err := CheckValidity(ca.Cert, now); err != nil {
		return nil, fmt.Errorf("signing CA: %w", err)
	}
	chain := append([]*x509.Certificate{ca.Cert}, ca.Issuers...)
	var inter []*x509.Certificate
	if len(chain) > 1 {
		inter = chain[:len(chain)-1]
	}
	return &Issuer{ca: ca, policy: p, caPEM: EncodeCertificates(root), chain: chain, interPM: EncodeCertificates(inter...)}, nil
}

// backdate is the policy's backdate, at most a tenth of the TTL.
func (i *Issuer) backdate() time.Duration { return backdateWithin(i.policy.Backdate, i.policy.TTL) }

// backdateWithin is the backdate d means (see backdate) for a certificate
// of lifetime ttl, at most a tenth of it: a short certificate backdated by
// minutes would spend most of its lifetime in its renewal window.
func backdateWithin(d, ttl time.Duration) time.Duration { return min(backdate(d), ttl/10) }

// CA returns the issuer's CA.
func (i *Issuer) CA() *Certified { return i.ca }

// Issued is a certificate just signed, with the chain to return.
type Issued struct {
	Cert *x509.Certificate
	// Chain runs from Cert to the root, inclusive.
	Chain []*x509.Certificate
	// CertPEM is Cert and the intermediates above it (tls.crt).
	CertPEM []byte
	// CAPEM is the root (ca.crt).
	CAPEM []byte
}

// SignPEM decodes a PEM CSR and signs it; see Sign.
func (i *Issuer) SignPEM(csrPEM []byte, id Identity, now time.Time) (*Issued, error) {
	csr, err := DecodeCSR(csrPEM)
	if err != nil {
		return nil, fmt.Errorf("certificate request: %w", err)
	}
	return i.Sign(csr, id, now)
}

// Sign checks csr against the identity and policy and signs it:
//   - the CSR's signature verifies with its key, of an allowed algorithm
//     and size;
//   - it asks for exactly the identity's DNS names (any order), no IP, URI
//     or email SANs, and no CA;
//   - the certificate carries the identity's names (and its cluster UID in
//     the subject, see ClusterUID), the role's usages, is
//     not a CA, lives min(TTL, issuer NotAfter − now) and starts Backdate
//     before now, at most TTL/10 (never before the issuer).
//
// Before returning, the chain is verified: x509.CreateCertificate checks
// the new signature with the issuer's public key (and that the signing key
// is the issuer's), and Sign then checks the parsed certificate links to
// the issuer (issuer name, authority key ID), has the identity's names,
// the CSR's key, no CA, and a validity inside the issuer's. The issuer's
// own chain to its root was verified by NewIssuer; the leaf's signature is
// not checked a second time, which keeps signing within 1.2× of the bare
// stdlib calls (see BenchmarkIssueClient).
func (i *Issuer) Sign(csr *x509.CertificateRequest, id Identity, now time.Time) (*Issued, error) {
	if err := i.checkRequest(csr, id); err != nil {
		return nil, err
	}
	spec, _ := KeySpecOf(csr.PublicKey)
	tmpl, err := template(i.policy.Role, spec.Algorithm, "", id.DNSNames, now.Add(-i.backdate()), now.Add(i.policy.TTL))
	if err != nil {
		return nil, err
	}
	if err := capValidity(tmpl, i.ca.Cert, now); err != nil {
		return nil, err
	}
	if id.ClusterUID != "" {
		tmpl.Subject.SerialNumber = ClusterUIDPrefix + id.ClusterUID
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, i.ca.Cert, csr.PublicKey, i.ca.Key)
	if err != nil {
		return nil, fmt.Errorf("failed to sign certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("failed to parse signed certificate: %w", err)
	}
	if err := i.checkIssued(cert, csr, id); err != nil {
		return nil, fmt.Errorf("signed certificate failed verification, not returned: %w", err)
	}
	certPEM := append(EncodeCertificates(cert), i.interPM...)
	return &Issued{
		Cert:    cert,
		Chain:   append([]*x509.Certificate{cert}, i.chain...),
		CertPEM: certPEM,
		CAPEM:   i.caPEM,
	}, nil
}

func (i *Issuer) checkRequest(csr *x509.CertificateRequest, id Identity) error {
	if len(id.DNSNames) == 0 {
		return errors.New("identity has no DNS names to certify")
	}
	for _, n := range id.DNSNames {
		if err := CheckDNSName(n, i.policy.Role == RoleServer); err != nil {
			return fmt.Errorf("identity: %w", err)
		}
	}
	if id.ClusterUID != "" {
		if err := CheckClusterUID(id.ClusterUID); err != nil {
			return fmt.Errorf("identity: %w", err)
		}
	}
	if err := csr.CheckSignature(); err != nil {
		return fmt.Errorf("certificate request signature does not verify: %w", err)
	}
	if err := checkAllowed(csr.PublicKey, i.policy.AllowedKeys); err != nil {
		return fmt.Errorf("certificate request: %w", err)
	}
	if n := len(csr.IPAddresses) + len(csr.URIs) + len(csr.EmailAddresses); n > 0 {
		return fmt.Errorf("certificate request asks for %d IP, URI or email SANs: ask only for DNS names %v", n, id.DNSNames)
	}
	if !sameNames(csr.DNSNames, id.DNSNames) {
		return fmt.Errorf("certificate request asks for DNS names %v, but the caller may hold only %v", csr.DNSNames, id.DNSNames)
	}
	for _, ext := range csr.Extensions {
		if ext.Id.Equal(oidBasicConstraints) && requestsCA(ext.Value) {
			return errors.New("certificate request asks to be a CA: leaf certificates are never CAs")
		}
	}
	return nil
}

func (i *Issuer) checkIssued(cert *x509.Certificate, csr *x509.CertificateRequest, id Identity) error {
	ca := i.ca.Cert
	switch {
	case !bytes.Equal(cert.RawIssuer, ca.RawSubject):
		return errors.New("issuer name differs from the signing CA's subject")
	case len(ca.SubjectKeyId) > 0 && !bytes.Equal(cert.AuthorityKeyId, ca.SubjectKeyId):
		return errors.New("authority key ID differs from the signing CA's subject key ID")
	case cert.IsCA:
		return errors.New("certificate is a CA")
	case !sameNames(cert.DNSNames, id.DNSNames):
		return fmt.Errorf("DNS names %v differ from the identity %v", cert.DNSNames, id.DNSNames)
	case cert.NotAfter.After(ca.NotAfter) || cert.NotBefore.Before(ca.NotBefore):
		return errors.New("validity is outside the signing CA's")
	}
	if uid, bound, err := ClusterUID(cert); err != nil || bound != (id.ClusterUID != "") || uid != id.ClusterUID {
		return fmt.Errorf("cluster binding %q differs from the identity's %q", uid, id.ClusterUID)
	}
	pub, ok := cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(csr.PublicKey) {
		return errors.New("public key differs from the certificate request's")
	}
	return nil
}

// sameNames reports whether a and b hold the same names, in any order.
func sameNames(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

var oidBasicConstraints = asn1.ObjectIdentifier{2, 5, 29, 19}

// requestsCA reports whether a basicConstraints extension value says CA,
// treating an unparseable one as a request to be a CA.
func requestsCA(value []byte) bool {
	var bc struct {
		IsCA       bool `asn1:"optional"`
		MaxPathLen int  `asn1:"optional,default:-1"`
	}
	rest, err := asn1.Unmarshal(value, &bc)
	return err != nil || len(rest) > 0 || bc.IsCA
}
