package relaysecret

import (
	"crypto/x509"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/meshrelay/meshrelay/pkg/pki"
)

// Context is what a check knows besides the secret itself.
type Context struct {
	// Authority is the SNI name agents dial: a server certificate's DNS
	// names must cover it.
	Authority string
	// Cluster is the cluster a client certificate must be for; empty when
	// the checker does not know it, and then the name is not compared.
	Cluster string
	// Roots are the other roots a signing, server or client chain must also
	// verify to when they differ from its own ca.crt: relay-root-tls-secret's
	// ca.crt, which RootsFrom names. A signing, server or client secret
	// without ca.crt verifies to them alone, with a warning.
	Roots     []*x509.Certificate
	RootsFrom string
	// GraceRatio is the fraction of a certificate's lifetime left under
	// which it is reported as due for renewal (a warning); 0 never warns.
	GraceRatio float64
	// Now is the time validity is checked at, from the caller's clock; the
	// zero time means the current time.
	Now time.Time
}

func (c *Context) now() time.Time {
	if c.Now.IsZero() {
		return time.Now()
	}
	return c.Now
}

// Validate decodes data as a secret of kind k and checks it: the material
// when it is usable, and everything found. A DNS name that is not DNS-1123
// is named first, even when something else fails to decode: it is the
// usual mistake, and the one other errors would hide. A signing, server or
// client secret without ca.crt (as `kubectl create secret tls` writes it)
// is checked against the context's Roots, with a warning; without Roots
// its missing ca.crt is an error, as Decode reports it.
func Validate(k Kind, data map[string][]byte, tokenKey string, ctx Context) (*Material, Result) {
	m, errs := Decode(k, data, tokenKey)
	r := Result{}
	errs = r.caFromContext(m, data, errs, ctx)
	if len(errs) > 0 {
		if m.Cert != nil {
			r.dnsNames(m)
		}
		r.Errs = append(r.Errs, errs...)
		return nil, r
	}
	checked := Check(m, ctx)
	r.Errs = append(r.Errs, checked.Errs...)
	r.Warnings = append(r.Warnings, checked.Warnings...)
	if !r.OK() {
		return nil, r
	}
	return m, r
}

// Check judges decoded material m as what its kind must be: keys strong
// enough, names valid, the chain verifying for the kind's role at the
// context's time, the names fitting the role (the authority for a server,
// the cluster for a client), and the other roots of the context. A
// certificate inside its renewal window is a warning.
func Check(m *Material, ctx Context) Result {
	r := Result{}
	now := ctx.now()
	switch m.Kind {
	case Root:
		r.checkRoot(m, ctx, now)
	case Signing, Server, Client:
		r.checkIssued(m, ctx, now)
		r.checkPrevious(m, now)
	case Token:
		if n := len(m.Token); n < MinTokenBytes {
			r.warn("data[%s] is %d bytes; an identity token shorter than %d bytes is easier to guess: use the one relay-server generates", m.keyKey, n, MinTokenBytes)
		}
	case IstioCA:
		if r.strength(m) {
			if _, err := pki.VerifyChain(m.Cert, m.Chain, m.Roots, pki.RoleSigningCA, now); err != nil {
				r.deny(pki.IstioCertChainKey, "does not verify to root-cert.pem: %v", err)
				return r
			}
			r.warnIfRenewing(m, ctx, now)
		}
	case TrustRoot:
		r.checkTrustRoot(m, now)
	}
	return r
}

// MinTokenBytes is the identity token length under which a token is
// reported as easy to guess.
const MinTokenBytes = 32

func (r *Result) checkRoot(m *Material, ctx Context, now time.Time) {
	for i, root := range m.Roots {
		if err := pki.CheckKeyStrength(root.PublicKey); err != nil {
			r.deny(KeyCACert, "certificate %d: %v", i+1, err)
			continue
		}
		if _, err := pki.VerifyChain(root, nil, nil, pki.RoleRoot, now); err != nil {
			r.deny(KeyCACert, "certificate %d: %v", i+1, err)
			continue
		}
		r.warnIfRenewingCert(KeyCACert, root, ctx, now)
	}
	if m.certKey == KeyTLSCert {
		if err := pki.CheckKeyStrength(m.Cert.PublicKey); err != nil {
			r.deny(KeyTLSCert, "%v", err)
		} else if _, err := pki.VerifyChain(m.Cert, nil, nil, pki.RoleRoot, now); err != nil {
			r.deny(KeyTLSCert, "%v", err)
		}
	}
}

// checkIssued checks a signing, server or client secret.
func (r *Result) checkIssued(m *Material, ctx Context, now time.Time) {
	role := m.Kind.Role()
	names := Result{}
	names.dnsNames(m)
	err := strengthErr(m)
	if err == nil {
		if _, verr := pki.VerifyChain(m.Cert, m.Chain, m.Roots, role, now); verr != nil && m.rootsFromContext {
			err = invalid(KeyTLSCert, "the secret has no ca.crt, and the chain does not verify to %s's ca.crt: %v: restore the certificate issued under that root, with its key", ctx.rootsFrom(), verr)
		} else if verr != nil {
			err = invalid(KeyTLSCert, "%v", verr)
		}
	}
	if err == nil {
		err = fits(m, ctx)
	}
	r.Errs = append(r.Errs, names.Errs...)
	if err != nil {
		r.Errs = append(r.Errs, err)
		return
	}
	if len(names.Errs) > 0 {
		return
	}
	if len(ctx.Roots) > 0 && !sameCerts(ctx.Roots, m.Roots) {
		if _, err := pki.VerifyChain(m.Cert, m.Chain, ctx.Roots, role, now); err != nil {
			r.deny(KeyTLSCert, "does not chain to %s's ca.crt: %v: issue it from that root, or put its root there", ctx.rootsFrom(), err)
			return
		}
	}
	r.warnIfRenewing(m, ctx, now)
}

// fits checks that a certificate's names fit its role.
func fits(m *Material, ctx Context) *field.Error {
	switch m.Kind {
	case Server:
		if err := pki.CoversAuthority(m.Cert, ctx.Authority); err != nil {
			return invalid(KeyTLSCert, "%v", err)
		}
	case Client:
		name, err := pki.ClientIdentity(m.Cert)
		if err != nil {
			return invalid(KeyTLSCert, "%v", err)
		}
		if ctx.Cluster != "" && name != ctx.Cluster {
			return invalid(KeyTLSCert, "client certificate is for cluster %q, not this cluster %q: issue it with DNS name %q", name, ctx.Cluster, ctx.Cluster)
		}
	}
	return nil
}

func (r *Result) checkTrustRoot(m *Material, now time.Time) {
	if !r.strength(m) {
		return
	}
	if len(m.Roots) == 0 {
		if _, err := pki.VerifyChain(m.Cert, nil, nil, pki.RoleRoot, now); err != nil {
			r.deny(m.certKey, "%v", err)
			return
		}
	} else if _, err := pki.VerifyChain(m.Cert, m.Chain, m.Roots, pki.RoleSigningCA, now); err != nil {
		r.deny(m.certKey, "%v", err)
		return
	}
	if m.Cert.MaxPathLenZero && m.Cert.MaxPathLen == 0 {
		r.deny(m.certKey, "CA %q has path length 0, so it may not sign the clusters' intermediate CAs: use a CA whose path length allows one more", m.Cert.Subject.CommonName)
	}
}

// dnsNames denies every DNS name of m's certificate that its kind does not
// allow.
func (r *Result) dnsNames(m *Material) {
	if m.Kind != Signing && m.Kind != Server && m.Kind != Client {
		return
	}
	for _, n := range m.Cert.DNSNames {
		if err := m.Kind.CheckDNSName(n); err != nil {
			r.deny(KeyTLSCert, "%v", err)
		}
	}
}

// CheckDNSName returns an error unless name may be a DNS name of a
// certificate of kind k, by pki.CheckRoleDNSName: the product's example
// signing CA carries *.gloo-mesh, a client certificate only its cluster.
func (k Kind) CheckDNSName(name string) error {
	return pki.CheckRoleDNSName(k.Role(), name)
}

// strength denies a key weaker than RSA 2048 or ECDSA P-256 anywhere in m;
// it reports whether all are strong enough.
func (r *Result) strength(m *Material) bool {
	if err := strengthErr(m); err != nil {
		r.Errs = append(r.Errs, err)
		return false
	}
	return true
}

func strengthErr(m *Material) *field.Error {
	for _, c := range append([]*x509.Certificate{m.Cert}, m.Chain...) {
		if err := pki.CheckKeyStrength(c.PublicKey); err != nil {
			return invalid(m.certKey, "certificate %q: %v", c.Subject.CommonName, err)
		}
	}
	for _, c := range m.Roots {
		if err := pki.CheckKeyStrength(c.PublicKey); err != nil {
			return invalid(rootsKey(m.Kind), "certificate %q: %v", c.Subject.CommonName, err)
		}
	}
	return nil
}

func rootsKey(k Kind) string {
	if k == IstioCA {
		return pki.IstioRootCertKey
	}
	return KeyCACert
}

func (r *Result) warnIfRenewing(m *Material, ctx Context, now time.Time) {
	r.warnIfRenewingCert(m.certKey, m.Cert, ctx, now)
}

// warnIfRenewingCert warns when cert has less than the grace ratio of its
// lifetime left.
func (r *Result) warnIfRenewingCert(key string, cert *x509.Certificate, ctx Context, now time.Time) {
	if ctx.GraceRatio <= 0 {
		return
	}
	if in, err := pki.InRotationWindow(cert, ctx.GraceRatio, now); err == nil && in {
		r.warn("data[%s]: certificate %q expires at %s, in %s: it is inside its rotation window, renew it", key, cert.Subject.CommonName,
			cert.NotAfter.UTC().Format(time.RFC3339), cert.NotAfter.Sub(now).Round(time.Minute))
	}
}

func sameCerts(a, b []*x509.Certificate) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !a[i].Equal(b[i]) {
			return false
		}
	}
	return true
}

// PeerIdentity returns the cluster a verified client chain proves, as
// relay-server reads it at the handshake: the leaf's one DNS name, and
// every key of the chain strong enough.
func PeerIdentity(chain []*x509.Certificate) (string, error) {
	if len(chain) == 0 {
		return "", fmt.Errorf("client certificate did not verify")
	}
	for _, c := range chain {
		if err := pki.CheckKeyStrength(c.PublicKey); err != nil {
			return "", fmt.Errorf("certificate %q: %w", c.Subject.CommonName, err)
		}
	}
	return pki.ClientIdentity(chain[0])
}

// Load is Validate for a caller that only needs to know whether the secret
// is usable: the material, or an error naming every problem.
func Load(k Kind, data map[string][]byte, tokenKey string, ctx Context) (*Material, error) {
	m, r := Validate(k, data, tokenKey, ctx)
	if m == nil {
		return nil, r.Err()
	}
	return m, nil
}

// checkPrevious checks the signing CAs of a signing secret's previous.crt:
// each must be a CA; one that no longer verifies to ca.crt (expired, or
// under a root that has left) is only a warning, as relay-server then no
// longer admits its certificates anyway.
func (r *Result) checkPrevious(m *Material, now time.Time) {
	for i, prev := range m.Previous {
		if !prev.BasicConstraintsValid || !prev.IsCA {
			r.deny(KeyPreviousCACert, "certificate %d (%q) is not a CA: previous.crt holds only signing CAs this secret's CA replaced", i+1, prev.Subject.CommonName)
			continue
		}
		if _, err := pki.VerifyChain(prev, nil, m.Roots, pki.RoleSigningCA, now); err != nil {
			r.warn("data[%s]: certificate %d (%q) no longer admits client certificates: %v; relay-server removes it at its next rotation, or remove it", KeyPreviousCACert, i+1, prev.Subject.CommonName, err)
		}
	}
}
