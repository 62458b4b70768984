package pki

import (
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
	"math/big"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// chainCert makes a certificate from tmpl signed by parent's key (self-signed
// when parent is nil), with a new P-256 key.
func chainCert(t testing.TB, tmpl *x509.Certificate, parent *x509.Certificate, parentKey crypto.Signer) (*x509.Certificate, crypto.Signer) {
	t.Helper()
	key := mustKey(t, ECDSAP256)
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	tmpl.SerialNumber = serial
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), parentKey)
	if err != nil {
		t.Fatalf("CreateCertificate(%q): %v", tmpl.Subject.CommonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

func caTemplate(cn string, notAfter time.Time) *x509.Certificate {
	return &x509.Certificate{
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             t0.Add(-time.Hour),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
}

func leafTemplate(name string, eku x509.ExtKeyUsage, notAfter time.Time) *x509.Certificate {
	return &x509.Certificate{
		Subject:               pkix.Name{CommonName: name},
		DNSNames:              []string{name},
		NotBefore:             t0.Add(-time.Hour),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{eku},
		BasicConstraintsValid: true,
	}
}

// linkCase is a chain to verify: cert, intermediates and roots for role.
type linkCase struct {
	name          string
	cert          *x509.Certificate
	intermediates []*x509.Certificate
	roots         []*x509.Certificate
	role          Role
}

// linkCases are chains of every shape the cache takes a short way for,
// and of shapes next to them, good and broken.
func linkCases(t testing.TB) []linkCase {
	year := 365 * 24 * time.Hour
	root, rootKey := chainCert(t, caTemplate("relay-root", t0.Add(10*year)), nil, nil)
	interTmpl := caTemplate("relay-signing", t0.Add(5*year))
	interTmpl.MaxPathLen, interTmpl.MaxPathLenZero = 0, true
	inter, interKey := chainCert(t, interTmpl, root, rootKey)
	client, _ := chainCert(t, leafTemplate("cluster-1", x509.ExtKeyUsageClientAuth, t0.Add(year)), inter, interKey)
	server, _ := chainCert(t, leafTemplate("relay.gloo-mesh", x509.ExtKeyUsageServerAuth, t0.Add(year)), inter, interKey)

	// A second PKI with the same names: its links must not pass for ours.
	twinRoot, twinRootKey := chainCert(t, caTemplate("relay-root", t0.Add(10*year)), nil, nil)
	twinInter, twinInterKey := chainCert(t, caTemplate("relay-signing", t0.Add(5*year)), twinRoot, twinRootKey)
	twinClient, _ := chainCert(t, leafTemplate("cluster-1", x509.ExtKeyUsageClientAuth, t0.Add(year)), twinInter, twinInterKey)

	// Roots that constrain what is below them, each with its own
	// intermediate and client.
	constrained := func(name string, edit func(*x509.Certificate)) linkCase {
		tmpl := caTemplate("root-"+name, t0.Add(10*year))
		edit(tmpl)
		r, rk := chainCert(t, tmpl, nil, nil)
		i, ik := chainCert(t, caTemplate("signing-"+name, t0.Add(5*year)), r, rk)
		l, _ := chainCert(t, leafTemplate("cluster-1", x509.ExtKeyUsageClientAuth, t0.Add(year)), i, ik)
		return linkCase{"client under a root with " + name, l, []*x509.Certificate{i}, []*x509.Certificate{r}, RoleClient}
	}
	pathLen0 := constrained("path length 0", func(c *x509.Certificate) { c.MaxPathLen, c.MaxPathLenZero = 0, true })
	pathLen1 := constrained("path length 1", func(c *x509.Certificate) { c.MaxPathLen = 1 })
	excluded := constrained("the cluster excluded", func(c *x509.Certificate) { c.ExcludedDNSDomains = []string{"cluster-1"} })
	permitted := constrained("the cluster permitted", func(c *x509.Certificate) { c.PermittedDNSDomains = []string{"cluster-1"} })
	serverOnly := constrained("server auth only", func(c *x509.Certificate) { c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth} })
	policies := constrained("a policy", func(c *x509.Certificate) { c.Policies = []x509.OID{mustOID(t, "1.2.3.4")} })

	// An intermediate that is not a CA, a leaf with a policy, a short-lived
	// intermediate, one without keyCertSign, and an intermediate that
	// expires after its root.
	notCATmpl := caTemplate("not-a-ca", t0.Add(5*year))
	notCATmpl.IsCA, notCATmpl.KeyUsage = false, x509.KeyUsageDigitalSignature
	notCA, notCAKey := chainCert(t, notCATmpl, root, rootKey)
	underNotCA, _ := chainCert(t, leafTemplate("cluster-1", x509.ExtKeyUsageClientAuth, t0.Add(year)), notCA, notCAKey)
	policyLeafTmpl := leafTemplate("cluster-1", x509.ExtKeyUsageClientAuth, t0.Add(year))
	policyLeafTmpl.Policies = []x509.OID{mustOID(t, "1.2.3.4")}
	policyLeaf, _ := chainCert(t, policyLeafTmpl, inter, interKey)
	shortInter, shortInterKey := chainCert(t, caTemplate("short-signing", t0.Add(time.Hour)), root, rootKey)
	underShort, _ := chainCert(t, leafTemplate("cluster-1", x509.ExtKeyUsageClientAuth, t0.Add(30*time.Minute)), shortInter, shortInterKey)
	shortRoot, shortRootKey := chainCert(t, caTemplate("short-root", t0.Add(2*time.Hour)), nil, nil)
	outlives, outlivesKey := chainCert(t, caTemplate("outlives-root", t0.Add(year)), shortRoot, shortRootKey)
	underOutlives, _ := chainCert(t, leafTemplate("cluster-1", x509.ExtKeyUsageClientAuth, t0.Add(year)), outlives, outlivesKey)
	noSign := *root
	noSign.KeyUsage = x509.KeyUsageDigitalSignature
	// An intermediate that requires an explicit policy, which none of the
	// chain carries (x509 refuses the chain), and a version 1 intermediate,
	// which has no basic constraints (x509 refuses it as an intermediate,
	// not as an anchor).
	explicitTmpl := caTemplate("explicit-policy", t0.Add(5*year))
	explicitTmpl.ExtraExtensions = []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 36}, Critical: true, Value: []byte{0x30, 0x03, 0x80, 0x01, 0x00}}}
	explicit, explicitKey := chainCert(t, explicitTmpl, root, rootKey)
	underExplicit, _ := chainCert(t, leafTemplate("cluster-1", x509.ExtKeyUsageClientAuth, t0.Add(year)), explicit, explicitKey)
	v1, v1Key := versionOneCA(t, "version-1", root, rootKey)
	underV1, _ := chainCert(t, leafTemplate("cluster-1", x509.ExtKeyUsageClientAuth, t0.Add(year)), v1, v1Key)

	in := func(c ...*x509.Certificate) []*x509.Certificate { return c }
	return []linkCase{
		{"client", client, in(inter), in(root), RoleClient},
		{"server", server, in(inter), in(root), RoleServer},
		{"server as client", server, in(inter), in(root), RoleClient},
		{"client as server", client, in(inter), in(root), RoleServer},
		{"signing CA", inter, nil, in(root), RoleSigningCA},
		{"signing CA with ca.crt holding another root first", inter, nil, in(twinRoot, root), RoleSigningCA},
		{"client with ca.crt holding another root first", client, in(inter), in(twinRoot, root), RoleClient},
		{"our intermediate under the twin root", inter, nil, in(twinRoot), RoleSigningCA},
		{"our client under the twin root", client, in(inter), in(twinRoot), RoleClient},
		{"twin intermediate under our root", twinInter, nil, in(root), RoleSigningCA},
		{"twin client under our root", twinClient, in(twinInter), in(root), RoleClient},
		{"our client through the twin intermediate", client, in(twinInter), in(root), RoleClient},
		{"twin client through our intermediate", twinClient, in(inter), in(root), RoleClient},
		{"client without its intermediate", client, nil, in(root), RoleClient},
		{"client with the intermediate in ca.crt", client, in(inter), in(inter, root), RoleClient},
		{"client with itself in ca.crt", client, in(inter), in(client, root), RoleClient},
		{"intermediate in ca.crt alone", client, in(inter), in(inter), RoleClient},
		{"client under a root without keyCertSign", client, in(inter), in(&noSign), RoleClient},
		{"client under an intermediate that is not a CA", underNotCA, in(notCA), in(root), RoleClient},
		{"client with a policy", policyLeaf, in(inter), in(root), RoleClient},
		{"client under an intermediate requiring an explicit policy", underExplicit, in(explicit), in(root), RoleClient},
		{"intermediate requiring an explicit policy", explicit, nil, in(root), RoleSigningCA},
		{"client under a version 1 intermediate", underV1, in(v1), in(root), RoleClient},
		{"client under a short-lived intermediate", underShort, in(shortInter), in(root), RoleClient},
		{"short-lived intermediate", shortInter, nil, in(root), RoleSigningCA},
		{"client under an intermediate that outlives its root", underOutlives, in(outlives), in(shortRoot), RoleClient},
		{"intermediate that outlives its root", outlives, nil, in(shortRoot), RoleSigningCA},
		pathLen0, pathLen1, excluded, permitted, serverOnly, policies,
		{"root as signing CA of itself", root, nil, in(root), RoleSigningCA},
		{"two intermediates", client, in(inter, twinInter), in(root), RoleClient},
	}
}

// versionOneCA makes a version 1 certificate (no extensions, so no basic
// constraints) named cn, signed by parent's key, as x509 cannot.
func versionOneCA(t testing.TB, cn string, parent *x509.Certificate, parentKey crypto.Signer) (*x509.Certificate, crypto.Signer) {
	t.Helper()
	key := mustKey(t, ECDSAP256)
	spki, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	subject, err := asn1.Marshal(pkix.Name{CommonName: cn}.ToRDNSequence())
	if err != nil {
		t.Fatal(err)
	}
	sigAlg := pkix.AlgorithmIdentifier{Algorithm: asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}} // ECDSA with SHA-256
	tbs, err := asn1.Marshal(struct {
		Serial   *big.Int
		SigAlg   pkix.AlgorithmIdentifier
		Issuer   asn1.RawValue
		Validity struct{ NotBefore, NotAfter time.Time }
		Subject  asn1.RawValue
		SPKI     asn1.RawValue
	}{big.NewInt(7), sigAlg, asn1.RawValue{FullBytes: parent.RawSubject},
		struct{ NotBefore, NotAfter time.Time }{t0.Add(-time.Hour).UTC(), t0.Add(365 * 24 * time.Hour).UTC()},
		asn1.RawValue{FullBytes: subject}, asn1.RawValue{FullBytes: spki}})
	if err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256(tbs)
	sig, err := parentKey.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	der, err := asn1.Marshal(struct {
		TBS    asn1.RawValue
		SigAlg pkix.AlgorithmIdentifier
		Sig    asn1.BitString
	}{asn1.RawValue{FullBytes: tbs}, sigAlg, asn1.BitString{Bytes: sig, BitLength: 8 * len(sig)}})
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	if cert.Version != 1 || cert.BasicConstraintsValid {
		t.Fatalf("made version %d, basic constraints %v", cert.Version, cert.BasicConstraintsValid)
	}
	return cert, key
}

func mustOID(t testing.TB, s string) x509.OID {
	t.Helper()
	oid, err := x509.ParseOID(s)
	if err != nil {
		t.Fatal(err)
	}
	return oid
}

// linkTimes are the moments every case is verified at: now, and around
// the ends of the certificates' validity.
var linkTimes = []time.Time{
	t0,
	t0.Add(-2 * time.Hour),
	t0.Add(45 * time.Minute),
	t0.Add(90 * time.Minute),
	t0.Add(3 * time.Hour),
	t0.Add(2 * 365 * 24 * time.Hour),
	t0.Add(6 * 365 * 24 * time.Hour),
	t0.Add(11 * 365 * 24 * time.Hour),
}

func result(chain []*x509.Certificate, err error) string {
	if err != nil {
		return "error: " + err.Error()
	}
	names := make([]string, len(chain))
	for i, c := range chain {
		names[i] = fmt.Sprintf("%s/%x", c.Subject.CommonName, c.SerialNumber)
	}
	return "chain: " + strings.Join(names, " <- ")
}

// TestLinkCacheVerifiesAsX509 verifies every case at every time without a
// cache, and with one that is cold, warm from the case itself, and warm
// from every other case first: the answer (the chain, or the error's
// text) is the same each time.
func TestLinkCacheVerifiesAsX509(t *testing.T) {
	cases := linkCases(t)
	warmAll := NewLinkCache(DefaultLinkCacheSize)
	for _, c := range cases {
		for _, now := range linkTimes {
			_, _ = warmAll.VerifyChain(c.cert, c.intermediates, c.roots, c.role, now)
		}
	}
	shortWays := 0
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cold := NewLinkCache(DefaultLinkCacheSize)
			for _, now := range linkTimes {
				want := result((*LinkCache)(nil).VerifyChain(c.cert, c.intermediates, c.roots, c.role, now))
				for _, lc := range []struct {
					name  string
					cache *LinkCache
				}{{"cold", cold}, {"warm", cold}, {"warm from every case", warmAll}} {
					if got := result(lc.cache.VerifyChain(c.cert, c.intermediates, c.roots, c.role, now)); got != want {
						t.Errorf("at %s, %s cache: %s\nwithout a cache: %s", now.Format(time.RFC3339), lc.name, got, want)
					}
				}
				if _, ok := warmAll.verifyLinked(c.cert, c.intermediates, c.roots, c.role, now); ok {
					shortWays++
					if strings.HasPrefix(want, "error") {
						t.Errorf("at %s the short way verified a chain x509 refuses: %s", now.Format(time.RFC3339), want)
					}
				}
			}
		})
	}
	// The usual chains take the short way: the test compares it, not
	// only the full way with itself.
	if shortWays < 20 {
		t.Errorf("only %d verifications took the cached way", shortWays)
	}
}

// TestLinkCacheKeepsTheCALinkOnly checks what is kept: after a client chain
// verifies, one link (intermediate to root), never the leaf's; a link that
// fails is not kept; a link is not reused for another intermediate or
// root of the same names.
func TestLinkCacheKeepsTheCALinkOnly(t *testing.T) {
	p := newTestPKI(t, ECDSAP256)
	twin := newTestPKI(t, ECDSAP256) // the same names, other keys
	cli, err := p.inter.IssueClient(Options{DNSNames: []string{"cluster-1"}, TTL: time.Hour, Now: t0})
	if err != nil {
		t.Fatal(err)
	}
	c := NewLinkCache(DefaultLinkCacheSize)
	inter, roots := []*x509.Certificate{p.inter.Cert}, []*x509.Certificate{p.root.Cert}
	if _, err := c.VerifyChain(cli.Cert, inter, roots, RoleClient, t0); err != nil {
		t.Fatal(err)
	}
	if n := c.Len(); n != 1 {
		t.Fatalf("%d links kept after one client chain, want 1 (the intermediate's)", n)
	}
	if _, ok := c.links[link{child: string(p.inter.Cert.Raw), parent: string(p.root.Cert.Raw)}]; !ok {
		t.Fatal("the intermediate's link to the root is not the one kept")
	}
	for _, tc := range []struct {
		name        string
		cert        *x509.Certificate
		inter, root []*x509.Certificate
		role        Role
	}{
		{"our intermediate under the twin root", p.inter.Cert, nil, []*x509.Certificate{twin.root.Cert}, RoleSigningCA},
		{"the twin intermediate under our root", twin.inter.Cert, nil, roots, RoleSigningCA},
		{"our client through the twin intermediate", cli.Cert, []*x509.Certificate{twin.inter.Cert}, roots, RoleClient},
		{"our client under the twin root", cli.Cert, inter, []*x509.Certificate{twin.root.Cert}, RoleClient},
	} {
		if _, err := c.VerifyChain(tc.cert, tc.inter, tc.root, tc.role, t0); err == nil {
			t.Errorf("%s verified", tc.name)
		}
	}
	if n := c.Len(); n != 1 {
		t.Errorf("%d links kept after chains that failed, want still 1", n)
	}
}

// TestLinkCacheChecksValidityAtEachUse verifies chains whose link is
// cached after their intermediate, their root or their leaf expired, and
// before they are valid: each is refused with the error it gets without
// a cache.
func TestLinkCacheChecksValidityAtEachUse(t *testing.T) {
	root, rootKey := chainCert(t, caTemplate("relay-root", t0.Add(48*time.Hour)), nil, nil)
	inter, interKey := chainCert(t, caTemplate("relay-signing", t0.Add(24*time.Hour)), root, rootKey)
	cli, _ := chainCert(t, leafTemplate("cluster-1", x509.ExtKeyUsageClientAuth, t0.Add(12*time.Hour)), inter, interKey)
	c := NewLinkCache(DefaultLinkCacheSize)
	for _, tc := range []struct {
		name string
		cert *x509.Certificate
		in   []*x509.Certificate
		role Role
	}{{"client", cli, []*x509.Certificate{inter}, RoleClient}, {"signing CA", inter, nil, RoleSigningCA}} {
		if _, err := c.VerifyChain(tc.cert, tc.in, []*x509.Certificate{root}, tc.role, t0); err != nil {
			t.Fatalf("%s at t0: %v", tc.name, err)
		}
		if c.Len() != 1 {
			t.Fatalf("the link was not kept")
		}
		for _, at := range []time.Duration{-2 * time.Hour, 13 * time.Hour, 25 * time.Hour, 49 * time.Hour} {
			now := t0.Add(at)
			if tc.role == RoleSigningCA && at == 13*time.Hour {
				continue // the signing CA is still valid then
			}
			_, err := c.VerifyChain(tc.cert, tc.in, []*x509.Certificate{root}, tc.role, now)
			_, want := (*LinkCache)(nil).VerifyChain(tc.cert, tc.in, []*x509.Certificate{root}, tc.role, now)
			if err == nil || want == nil || err.Error() != want.Error() {
				t.Errorf("%s at t0%+v with the link cached: %v, want %v", tc.name, at, err, want)
			}
		}
	}
}

// TestLinkCacheStaysBounded verifies many distinct links, as secrets with
// their own CAs would bring: the cache holds at most its size, every chain
// still verifies, and ours still does after the flood.
func TestLinkCacheStaysBounded(t *testing.T) {
	p := newTestPKI(t, ECDSAP256)
	const size = 8
	c := NewLinkCache(size)
	roots := []*x509.Certificate{p.root.Cert}
	for i := range 5 * size {
		other, err := p.root.NewIntermediateCA(Options{CommonName: fmt.Sprintf("signing-%d", i), TTL: time.Hour, Now: t0})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.VerifyChain(other.Cert, nil, roots, RoleSigningCA, t0); err != nil {
			t.Fatalf("intermediate %d: %v", i, err)
		}
		if n := c.Len(); n > size {
			t.Fatalf("%d links kept after %d intermediates, more than the %d allowed", n, i+1, size)
		}
	}
	if n := c.Len(); n != size {
		t.Errorf("%d links kept, want the cache full (%d)", n, size)
	}
	if _, err := c.VerifyChain(p.inter.Cert, nil, roots, RoleSigningCA, t0); err != nil {
		t.Errorf("our intermediate after the flood: %v", err)
	}
	// A link larger than maxLinkBytes is verified, never kept.
	if n := NewLinkCache(1); n.size != 1 || NewLinkCache(0).size != 1 {
		t.Errorf("a cache of %d or 0 does not hold one link", n.size)
	}
	big := *p.inter.Cert
	big.Raw = append(slices.Clone(p.inter.Cert.Raw), make([]byte, maxLinkBytes)...)
	fresh := NewLinkCache(size)
	_ = fresh.checkSignature(&big, p.root.Cert)
	if fresh.Len() != 0 {
		t.Errorf("a link of %d bytes was kept", len(big.Raw)+len(p.root.Cert.Raw))
	}
}

// TestLinkCacheConcurrentUse verifies from several goroutines at once
// (run with -race).
func TestLinkCacheConcurrentUse(t *testing.T) {
	p := newTestPKI(t, ECDSAP256)
	cli, err := p.inter.IssueClient(Options{DNSNames: []string{"cluster-1"}, TTL: time.Hour, Now: t0})
	if err != nil {
		t.Fatal(err)
	}
	c := NewLinkCache(2)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 20 {
				if _, err := c.VerifyChain(cli.Cert, []*x509.Certificate{p.inter.Cert}, []*x509.Certificate{p.root.Cert}, RoleClient, t0); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// TestSetLinkCache checks that VerifyChain uses the process's cache once
// set, and none after it is cleared.
func TestSetLinkCache(t *testing.T) {
	p := newTestPKI(t, ECDSAP256)
	c := NewLinkCache(DefaultLinkCacheSize)
	SetLinkCache(c)
	defer SetLinkCache(nil)
	if _, err := VerifyChain(p.inter.Cert, nil, []*x509.Certificate{p.root.Cert}, RoleSigningCA, t0); err != nil {
		t.Fatal(err)
	}
	if c.Len() != 1 {
		t.Errorf("VerifyChain kept %d links in the process's cache, want 1", c.Len())
	}
	SetLinkCache(nil)
	other := newTestPKI(t, ECDSAP256)
	if _, err := VerifyChain(other.inter.Cert, nil, []*x509.Certificate{other.root.Cert}, RoleSigningCA, t0); err != nil {
		t.Fatal(err)
	}
	if c.Len() != 1 {
		t.Errorf("VerifyChain used a cache after it was cleared")
	}
}
