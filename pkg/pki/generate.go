package pki

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"time"
)

// Certified is a certificate with its private key and the certificates
// above it.
type Certified struct {
	Cert *x509.Certificate
	Key  crypto.Signer
	// Issuers are the certificates above Cert, nearest first, ending with the
	// root. A root has none.
	Issuers []*x509.Certificate
}

// Root returns the root of c's chain: the last issuer, or c itself.
func (c *Certified) Root() *x509.Certificate {
	if len(c.Issuers) == 0 {
		return c.Cert
	}
	return c.Issuers[len(c.Issuers)-1]
}

// CertPEM returns Cert followed by the intermediates above it (not the
// root), as a secret's tls.crt holds them.
func (c *Certified) CertPEM() []byte {
	chain := []*x509.Certificate{c.Cert}
	if len(c.Issuers) > 1 {
		chain = append(chain, c.Issuers[:len(c.Issuers)-1]...)
	}
	return EncodeCertificates(chain...)
}

// CAPEM returns the root as PEM, as a secret's ca.crt holds it.
func (c *Certified) CAPEM() []byte { return EncodeCertificates(c.Root()) }

// KeyPEM returns the private key as PKCS#8 PEM.
func (c *Certified) KeyPEM() ([]byte, error) { return EncodePrivateKey(c.Key) }

// Options describe a certificate to generate.
type Options struct {
	// CommonName of the subject; for leaves, defaults to the first DNS name.
	CommonName   string
	Organization []string
	// DNSNames are the subject alternative names; each is checked as a
	// DNS-1123 name, by CheckRoleDNSName (a wildcard first label on servers
	// and CAs, never on clients).
	DNSNames []string
	// IPAddresses are IP subject alternative names, for a server reached by
	// address; only a server certificate may carry them.
	IPAddresses []net.IP
	// LeavesOnly limits a root CA to signing leaves, not other CAs (path
	// length 0), as an intermediate always is; it matters only for a root.
	LeavesOnly bool
	// TTL is the lifetime; an issued certificate never outlives its issuer.
	TTL time.Duration
	// Key is the key to make (ECDSA P-256 when zero).
	Key KeySpec
	// Now is the time of issue; zero means time.Now().
	Now time.Time
	// Backdate moves NotBefore earlier to absorb clock skew; zero means
	// DefaultBackdate, negative means none.
	Backdate time.Duration
}

// DefaultBackdate is how far NotBefore is set before the time of issue, so
// that a peer whose clock runs a little behind accepts a new certificate.
const DefaultBackdate = 2 * time.Minute

func (o *Options) now() time.Time {
	if o.Now.IsZero() {
		return time.Now()
	}
	return o.Now
}

func backdate(d time.Duration) time.Duration {
	switch {
	case d == 0:
		return DefaultBackdate
	case d < 0:
		return 0
	}
	return d
}

// NewRootCA makes a self-signed root CA.
func NewRootCA(opts Options) (*Certified, error) {
	if opts.CommonName == "" {
		return nil, errors.New("root CA needs a common name")
	}
	return issue(nil, RoleRoot, opts)
}

// NewIntermediateCA makes a CA signed by parent that may sign leaves but no
// other CA (path length 0), as relay-tls-signing-secret holds.
func (c *Certified) NewIntermediateCA(opts Options) (*Certified, error) {
	if opts.CommonName == "" {
		return nil, errors.New("intermediate CA needs a common name")
	}
	return issue(c, RoleSigningCA, opts)
}

// IssueServer makes a server certificate signed by c.
func (c *Certified) IssueServer(opts Options) (*Certified, error) { return issue(c, RoleServer, opts) }

// IssueClient makes a client certificate signed by c.
func (c *Certified) IssueClient(opts Options) (*Certified, error) { return issue(c, RoleClient, opts) }

func issue(parent *Certified, role Role, opts Options) (*Certified, error) {
	if opts.TTL <= 0 {
		return nil, fmt.Errorf("%s certificate TTL %s must be positive", role, opts.TTL)
	}
	for _, name := range opts.DNSNames {
		if err := CheckRoleDNSName(role, name); err != nil {
			return nil, err
		}
	}
	if !role.isCA() && len(opts.DNSNames) == 0 {
		return nil, fmt.Errorf("%s certificate needs at least one DNS name", role)
	}
	if err := checkIPAddresses(opts.IPAddresses, role); err != nil {
		return nil, err
	}
	key, err := GenerateKey(opts.Key)
	if err != nil {
		return nil, err
	}
	spec, _ := KeySpecOf(key.Public())
	now := opts.now()
	tmpl, err := template(role, spec.Algorithm, opts.CommonName, opts.DNSNames, now.Add(-backdate(opts.Backdate)), now.Add(opts.TTL))
	if err != nil {
		return nil, err
	}
	tmpl.Subject.Organization = opts.Organization
	tmpl.IPAddresses = opts.IPAddresses
	if role == RoleRoot && opts.LeavesOnly {
		tmpl.MaxPathLen, tmpl.MaxPathLenZero = 0, true
	}
	signerCert, signerKey, issuers := tmpl, key, []*x509.Certificate(nil)
	if parent != nil {
		if err := capValidity(tmpl, parent.Cert, now); err != nil {
			return nil, err
		}
		signerCert, signerKey = parent.Cert, parent.Key
		issuers = append([]*x509.Certificate{parent.Cert}, parent.Issuers...)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signerCert, key.Public(), signerKey)
	if err != nil {
		return nil, fmt.Errorf("failed to sign %s certificate: %w", role, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("failed to parse new %s certificate: %w", role, err)
	}
	return &Certified{Cert: cert, Key: key, Issuers: issuers}, nil
}

// checkIPAddresses returns an error unless every address is a valid IP and
// role may carry IP SANs: only a server may.
func checkIPAddresses(ips []net.IP, role Role) error {
	if len(ips) > 0 && role != RoleServer {
		return fmt.Errorf("%s certificate may not carry IP addresses: only a server certificate does", role)
	}
	for _, ip := range ips {
		if ip.To16() == nil {
			return fmt.Errorf("IP address %v is not valid: it has %d bytes, not 4 or 16", ip, len(ip))
		}
	}
	return nil
}

// template returns the certificate template of role, valid from notBefore
// to notAfter.
func template(role Role, alg Algorithm, cn string, dnsNames []string, notBefore, notAfter time.Time) (*x509.Certificate, error) {
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	if cn == "" && len(dnsNames) > 0 {
		cn = dnsNames[0]
	}
	t := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn},
		DNSNames:              dnsNames,
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              role.keyUsage(alg),
		ExtKeyUsage:           role.extKeyUsage(),
		BasicConstraintsValid: true,
		IsCA:                  role.isCA(),
	}
	if role == RoleSigningCA {
		t.MaxPathLen, t.MaxPathLenZero = 0, true
	}
	return t, nil
}

// capValidity keeps t inside issuer's validity: NotAfter no later than the
// issuer's, NotBefore no earlier. It fails when the issuer has expired.
func capValidity(t, issuer *x509.Certificate, now time.Time) error {
	if !now.Before(issuer.NotAfter) {
		return fmt.Errorf("issuer %q expired at %s: renew the signing CA", issuer.Subject.CommonName, issuer.NotAfter.UTC().Format(time.RFC3339))
	}
	if t.NotAfter.After(issuer.NotAfter) {
		t.NotAfter = issuer.NotAfter
	}
	if t.NotBefore.Before(issuer.NotBefore) {
		t.NotBefore = issuer.NotBefore
	}
	return nil
}

var serialLimit = new(big.Int).Lsh(big.NewInt(1), 128)

// newSerial returns a random positive 128-bit serial number.
func newSerial() (*big.Int, error) {
	for {
		n, err := rand.Int(rand.Reader, serialLimit)
		if err != nil {
			return nil, fmt.Errorf("failed to generate serial number: %w", err)
		}
		if n.Sign() > 0 {
			return n, nil
		}
	}
}
