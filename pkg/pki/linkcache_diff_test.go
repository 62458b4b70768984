package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"flag"
	"fmt"
	"math/big"
	mrand "math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"
)

// The differential test of LinkCache draws sets of certificates at random,
// from a fixed seed unless told another: go test ./pkg/pki -run
// LinkCacheDifferential -linkcache.seed=7 -linkcache.rounds=500.
var (
	linkCacheSeed   = flag.Uint64("linkcache.seed", 1, "seed of the LinkCache differential tests")
	linkCacheRounds = flag.Int("linkcache.rounds", 0, "certificate sets the LinkCache differential tests draw (0: 60, 8 with -short)")
)

// diffRounds is the number of certificate sets to draw.
func diffRounds() int {
	switch {
	case *linkCacheRounds > 0:
		return *linkCacheRounds
	case testing.Short():
		return 8
	}
	return 60
}

// diffKeys are the keys the certificates of every set are made with: few,
// so that a certificate often names an issuer whose key did not sign it, or
// shares its key with another.
var diffKeys = sync.OnceValue(func() []crypto.Signer {
	var keys []crypto.Signer
	for range 4 {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			panic(err)
		}
		keys = append(keys, k)
	}
	return keys
})

// diffNode is a certificate drawn at random, with how it was made.
type diffNode struct {
	cert   *x509.Certificate
	key    crypto.Signer
	parent *diffNode
	// signedBy says which key signed it: its issuer's, or another.
	signedBy string
}

// diffWorld is a set of certificates drawn from one seed: roots, CAs under
// them (and under each other), leaves under the CAs and the roots, with
// few names and keys, validities around t0, and now and then a flaw: not
// a CA, no basic constraints, no certSign usage, a path length, name
// constraints, policies, an unknown critical extension, a signature by a
// key other than the issuer's.
type diffWorld struct {
	r                         *mrand.Rand
	id                        int
	serial                    int64
	roots, cas, leaves, every []*diffNode
}

func pickOne[T any](r *mrand.Rand, xs []T) T { return xs[r.IntN(len(xs))] }

func newDiffWorld(t testing.TB, seed uint64, id int) *diffWorld {
	w := &diffWorld{r: mrand.New(mrand.NewPCG(seed, uint64(id))), id: id}
	for range 4 {
		w.roots = append(w.roots, w.cert(t, true, nil))
	}
	for range 8 {
		w.cas = append(w.cas, w.cert(t, true, pickOne(w.r, w.roots)))
	}
	for range 3 {
		w.cas = append(w.cas, w.cert(t, true, pickOne(w.r, w.cas)))
	}
	for range 12 {
		w.leaves = append(w.leaves, w.cert(t, false, pickOne(w.r, w.cas)))
	}
	for range 2 {
		w.leaves = append(w.leaves, w.cert(t, false, pickOne(w.r, w.roots)))
	}
	w.every = append(append(append(w.every, w.roots...), w.cas...), w.leaves...)
	return w
}

// cert draws a certificate, a CA or a leaf, issued by parent (nil: self-signed).
func (w *diffWorld) cert(t testing.TB, ca bool, parent *diffNode) *diffNode {
	t.Helper()
	r, keys := w.r, diffKeys()
	w.serial++
	keyIndex := r.IntN(len(keys))
	key := keys[keyIndex]
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(int64(w.id)*1000 + w.serial), Subject: pkix.Name{CommonName: pickOne(r, []string{"root-a", "root-b", "ca-a", "ca-b"})}}
	if !ca {
		tmpl.Subject.CommonName = pickOne(r, []string{"leaf", "ca-a"})
	}
	offsets := []time.Duration{-48 * time.Hour, -2 * time.Hour, -time.Hour, 0, time.Hour, 2 * time.Hour, 48 * time.Hour, 1000 * time.Hour}
	tmpl.NotBefore, tmpl.NotAfter = t0.Add(pickOne(r, offsets[:5])), t0.Add(pickOne(r, offsets[3:]))
	tmpl.BasicConstraintsValid = r.IntN(10) != 0
	tmpl.IsCA = ca != (r.IntN(8) == 0)
	if ca {
		tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature
		if r.IntN(8) == 0 {
			tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		}
		switch r.IntN(4) {
		case 0:
			tmpl.MaxPathLen, tmpl.MaxPathLenZero = 0, true
		case 1:
			tmpl.MaxPathLen = 1
		default:
			tmpl.MaxPathLen = -1
		}
	} else {
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		tmpl.DNSNames = []string{pickOne(r, []string{"a.example", "b.example"})}
	}
	switch r.IntN(5) {
	case 0:
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	case 1:
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	case 2:
		if !ca {
			tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
		}
	}
	if ca && r.IntN(8) == 0 {
		tmpl.PermittedDNSDomains = []string{"a.example"}
	}
	if ca && r.IntN(8) == 0 {
		tmpl.ExcludedDNSDomains = []string{"a.example"}
	}
	if r.IntN(10) == 0 {
		tmpl.Policies = []x509.OID{mustOID(t, "1.2.3.4")}
	}
	if r.IntN(12) == 0 { // an unknown critical extension
		tmpl.ExtraExtensions = append(tmpl.ExtraExtensions, pkix.Extension{Id: asn1.ObjectIdentifier{1, 2, 3, 99}, Critical: true, Value: []byte{5, 0}})
	}
	if r.IntN(12) == 0 { // policy constraints, critical
		tmpl.ExtraExtensions = append(tmpl.ExtraExtensions, pkix.Extension{Id: asn1.ObjectIdentifier{2, 5, 29, 36}, Critical: true, Value: []byte{0x30, 0x03, 0x80, 0x01, 0x00}})
	}
	if r.IntN(6) == 0 {
		tmpl.SubjectKeyId = []byte{byte(r.IntN(3))}
	}
	// The issuer as CreateCertificate sees it, and the key that signs.
	issuer, signer, signedBy := tmpl, key, "its own key"
	if parent != nil {
		pc := *parent.cert
		issuer, signer, signedBy = &pc, parent.key, "its issuer's key"
	}
	if r.IntN(10) == 0 { // a key other than the issuer's
		i := r.IntN(len(keys))
		other := *issuer
		other.PublicKey = keys[i].Public()
		issuer, signer, signedBy = &other, keys[i], fmt.Sprintf("key %d, maybe not its issuer's", i)
	}
	if !tmpl.IsCA {
		tmpl.MaxPathLen, tmpl.MaxPathLenZero = -1, false
	}
	if r.IntN(2) == 0 { // a clean certificate, signed by its issuer
		tmpl.NotBefore, tmpl.NotAfter = t0.Add(-48*time.Hour), t0.Add(1000*time.Hour)
		tmpl.BasicConstraintsValid, tmpl.IsCA = true, ca
		tmpl.ExtraExtensions, tmpl.Policies = nil, nil
		if ca {
			tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature
		} else {
			tmpl.MaxPathLen, tmpl.MaxPathLenZero = -1, false
		}
		issuer, signer, signedBy = tmpl, key, "its own key"
		if parent != nil {
			pc := *parent.cert
			issuer, signer, signedBy = &pc, parent.key, "its issuer's key"
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, key.Public(), signer)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &diffNode{cert: c, key: key, parent: parent, signedBy: fmt.Sprintf("key %d, signed with %s", keyIndex, signedBy)}
}

// diffTrial is a verification: a certificate, intermediates and roots, a
// role and a time.
type diffTrial struct {
	cert          *diffNode
	intermediates []*diffNode
	roots         []*diffNode
	role          Role
	now           time.Time
}

// trial draws a verification: half the time the certificate's own chain,
// now and then with another root before its own or a stray intermediate;
// otherwise intermediates and roots of the world at random.
func (w *diffWorld) trial() diffTrial {
	r := w.r
	d := diffTrial{role: pickOne(r, []Role{RoleClient, RoleServer, RoleSigningCA})}
	if d.role == RoleSigningCA {
		d.cert = pickOne(r, w.cas)
	} else {
		d.cert = pickOne(r, w.leaves)
	}
	if r.IntN(2) == 0 {
		p := d.cert.parent
		for p != nil && p.parent != nil {
			d.intermediates = append(d.intermediates, p)
			p = p.parent
		}
		if p != nil {
			d.roots = append(d.roots, p)
		}
		if r.IntN(3) == 0 {
			d.roots = append([]*diffNode{pickOne(r, w.roots)}, d.roots...)
		}
		if r.IntN(4) == 0 {
			d.intermediates = append(d.intermediates, pickOne(r, w.every))
		}
	} else {
		for n := pickOne(r, []int{0, 1, 1, 1, 2}); n > 0; n-- {
			if r.IntN(6) == 0 {
				d.intermediates = append(d.intermediates, pickOne(r, w.every))
			} else {
				d.intermediates = append(d.intermediates, pickOne(r, w.cas))
			}
		}
		for n := 1 + r.IntN(3); n > 0; n-- {
			if r.IntN(6) == 0 {
				d.roots = append(d.roots, pickOne(r, w.every))
			} else {
				d.roots = append(d.roots, pickOne(r, w.roots))
			}
		}
	}
	if len(d.roots) == 0 {
		d.roots = append(d.roots, pickOne(r, w.roots))
	}
	d.now = t0.Add(pickOne(r, []time.Duration{-3 * time.Hour, -90 * time.Minute, 0, 90 * time.Minute, 3 * time.Hour, 500 * time.Hour, 2000 * time.Hour}))
	return d
}

// verify is d's VerifyChain with c, as result gives it.
func (d diffTrial) verify(c *LinkCache) string {
	return result(c.VerifyChain(d.cert.cert, certsOf(d.intermediates), certsOf(d.roots), d.role, d.now))
}

func certsOf(ns []*diffNode) []*x509.Certificate {
	cs := make([]*x509.Certificate, len(ns))
	for i, n := range ns {
		cs[i] = n.cert
	}
	return cs
}

// String describes d whole, to reproduce a difference.
func (d diffTrial) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "verify as %s at t0%+v (t0 = %s):\n  certificate: %s\n", d.role, d.now.Sub(t0), t0.Format(time.RFC3339), describeDiffNode(d.cert))
	for _, n := range d.intermediates {
		fmt.Fprintf(&b, "  intermediate: %s\n", describeDiffNode(n))
	}
	for _, n := range d.roots {
		fmt.Fprintf(&b, "  root: %s\n", describeDiffNode(n))
	}
	return b.String()
}

func describeDiffNode(n *diffNode) string {
	c := n.cert
	var exts []string
	for _, e := range c.Extensions {
		s := e.Id.String()
		if e.Critical {
			s += " (critical)"
		}
		exts = append(exts, s)
	}
	return fmt.Sprintf("%q serial %d, issuer %q (%s), valid t0%+v to t0%+v, CA %v (basic constraints %v, max path %d, zero %v), key usage %v, extended %v, DNS %v, permitted %v, excluded %v, key id %x, authority key id %x, extensions %s",
		c.Subject.CommonName, c.SerialNumber, c.Issuer.CommonName, n.signedBy, c.NotBefore.Sub(t0), c.NotAfter.Sub(t0),
		c.IsCA, c.BasicConstraintsValid, c.MaxPathLen, c.MaxPathLenZero, c.KeyUsage, c.ExtKeyUsage, c.DNSNames,
		c.PermittedDNSDomains, c.ExcludedDNSDomains, c.SubjectKeyId, c.AuthorityKeyId, strings.Join(exts, ", "))
}

// TestLinkCacheDifferential verifies random chains, of random certificate
// sets at random times, without a cache and with: one of the default size
// kept over every set, cold for a link at first and warm after, verified
// again right away; and one of two links that keeps losing them. The answer
// (the chain, or the error's text) must be the same each time, so that a
// check x509 adds in a Go release, that the short way of the cache does not
// make, shows here.
func TestLinkCacheDifferential(t *testing.T) {
	seed, rounds := *linkCacheSeed, diffRounds()
	warm, tiny := NewLinkCache(DefaultLinkCacheSize), NewLinkCache(2)
	counter := NewLinkCache(DefaultLinkCacheSize) // counts the short ways, leaving warm cold for new links
	verified, ok, short, failures := 0, 0, 0, 0
	for world := range rounds {
		w := newDiffWorld(t, seed, world)
		for trial := range 100 {
			d := w.trial()
			want := d.verify(nil)
			verified++
			if strings.HasPrefix(want, "chain: ") {
				ok++
			}
			if _, linked := counter.verifyLinked(d.cert.cert, certsOf(d.intermediates), certsOf(d.roots), d.role, d.now); linked {
				short++
			}
			for _, c := range []struct {
				name  string
				cache *LinkCache
			}{
				{"the kept cache", warm},
				{"the cache of two links", tiny},
				{"the kept cache, again", warm},
			} {
				if got := d.verify(c.cache); got != want {
					failures++
					t.Errorf("seed %d, set %d, trial %d, with %s:\n  %s\nwithout a cache:\n  %s\n%s(go test ./pkg/pki -run 'TestLinkCacheDifferential$' -linkcache.seed=%d -linkcache.rounds=%d)",
						seed, world, trial, c.name, got, want, d, seed, world+1)
				}
			}
			if failures >= 5 {
				t.Fatalf("%d differences, stopping", failures)
			}
		}
	}
	if ok == 0 || ok == verified || short == 0 {
		t.Errorf("%d of %d chains verify, %d of them the short way: the draws should give all three", ok, verified, short)
	}
	t.Logf("seed %d: %d certificate sets, %d verifications, %d chains verified, %d of them the short way, %d links kept", seed, rounds, verified, ok, short, warm.Len())
}

// TestLinkCacheDifferentialConcurrent verifies chains drawn as above from
// many goroutines sharing a cache of three links, which they keep taking
// from each other: every answer is the one without a cache.
func TestLinkCacheDifferentialConcurrent(t *testing.T) {
	seed := *linkCacheSeed
	var trials []diffTrial
	var wants []string
	var where []string
	for world := range max(diffRounds()/5, 1) {
		w := newDiffWorld(t, seed+1, world)
		for trial := range 60 {
			d := w.trial()
			trials, wants = append(trials, d), append(wants, d.verify(nil))
			where = append(where, fmt.Sprintf("seed %d, set %d, trial %d", seed+1, world, trial))
		}
	}
	c := NewLinkCache(3)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 2 * len(trials) / 8 {
				k := (i*7 + g*13) % len(trials)
				if got := trials[k].verify(c); got != wants[k] {
					t.Errorf("%s, goroutine %d, with the shared cache:\n  %s\nwithout a cache:\n  %s\n%s(go test ./pkg/pki -run 'TestLinkCacheDifferentialConcurrent$' -linkcache.seed=%d)", where[k], g, got, wants[k], trials[k], seed)
					return
				}
			}
		})
	}
	wg.Wait()
}
