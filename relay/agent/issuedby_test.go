package agent

import (
	"crypto"
	"crypto/x509"
	"testing"
	"time"

	"github.com/meshrelay/meshrelay/pkg/pki"
)

// relayCA is a relay root with a signing CA under it, as relay-server
// generates them, valid a day either side of now.
type relayCA struct {
	root, signing *pki.Certified
}

func newRelayCA(t *testing.T, name string, now time.Time) *relayCA {
	t.Helper()
	root, err := pki.NewRootCA(pki.Options{CommonName: name + " root", TTL: 48 * time.Hour, Now: now.Add(-24 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	signing, err := root.NewIntermediateCA(pki.Options{CommonName: name + " signing", TTL: 48 * time.Hour, Now: now.Add(-24 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	return &relayCA{root: root, signing: signing}
}

// signBound signs a client certificate for cluster-1 the way relay-server
// does: from ca, bound to a KubernetesCluster UID, issued at at.
func signBound(t *testing.T, ca *pki.Certified, uid string, at time.Time, ttl time.Duration) (*x509.Certificate, []*x509.Certificate) {
	t.Helper()
	issued, _ := signBoundWithKey(t, ca, uid, at, ttl)
	return issued.Chain[0], issued.Chain[1 : len(issued.Chain)-1]
}

// signBoundWithKey is signBound that returns what relay-server returns
// (tls.crt is CertPEM) and the key.
func signBoundWithKey(t *testing.T, ca *pki.Certified, uid string, at time.Time, ttl time.Duration) (*pki.Issued, crypto.Signer) {
	t.Helper()
	iss, err := pki.NewIssuer(ca, pki.Policy{Role: pki.RoleClient, TTL: ttl}, at)
	if err != nil {
		t.Fatal(err)
	}
	key, err := pki.GenerateKey(pki.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.NewCSR(key, "cluster-1")
	if err != nil {
		t.Fatal(err)
	}
	issued, err := iss.SignPEM(csr, pki.Identity{DNSNames: []string{"cluster-1"}, ClusterUID: uid}, at)
	if err != nil {
		t.Fatal(err)
	}
	return issued, key
}

func TestTheAgentRenewsOnlyWhatTheRelayServerIssued(t *testing.T) {
	now := time.Now()
	relay, other := newRelayCA(t, "relay", now), newRelayCA(t, "other", now)
	// Our own rotations: a new signing CA under the same root, and a new
	// root with its own signing CA.
	nextSigning, err := relay.root.NewIntermediateCA(pki.Options{CommonName: "relay signing 2", TTL: 48 * time.Hour, Now: now.Add(-time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	nextRoot := newRelayCA(t, "relay next", now)
	unbound := func(ca *pki.Certified) (*x509.Certificate, []*x509.Certificate) {
		c, err := ca.IssueClient(pki.Options{DNSNames: []string{"cluster-1"}, TTL: time.Hour, Now: now})
		if err != nil {
			t.Fatal(err)
		}
		return c.Cert, c.Issuers[:len(c.Issuers)-1]
	}
	bound := func(ca *pki.Certified, at time.Time) (*x509.Certificate, []*x509.Certificate) {
		return signBound(t, ca, "0b5e8d1c-7a2f-4c3e-9d6b-1f2a3b4c5d6e", at, time.Hour)
	}
	rootKey := &pki.Certified{Cert: relay.root.Cert, Key: relay.root.Key}
	for _, tc := range []struct {
		name string
		cert func() (*x509.Certificate, []*x509.Certificate)
		// roots are the agent's trust anchors.
		roots   []*x509.Certificate
		rootKey *pki.Certified
		want    bool
	}{
		{"a certificate relay-server signed and bound to the cluster is the relay's",
			func() (*x509.Certificate, []*x509.Certificate) { return bound(relay.signing, now) }, []*x509.Certificate{relay.root.Cert}, nil, true},
		{"one relay-server signed that has expired is still the relay's, to be replaced",
			func() (*x509.Certificate, []*x509.Certificate) { return bound(relay.signing, now.Add(-3*time.Hour)) }, []*x509.Certificate{relay.root.Cert}, nil, true},
		{"one from the next signing CA under the same root is the relay's",
			func() (*x509.Certificate, []*x509.Certificate) { return bound(nextSigning, now) }, []*x509.Certificate{relay.root.Cert}, nil, true},
		{"one under a new root that joined the anchors is the relay's",
			func() (*x509.Certificate, []*x509.Certificate) { return bound(nextRoot.signing, now) }, []*x509.Certificate{relay.root.Cert, nextRoot.root.Cert}, nil, true},
		{"one from the relay's signing CA without the binding (relayctl gen, a cert-manager CA issuer) is another issuer's",
			func() (*x509.Certificate, []*x509.Certificate) { return unbound(relay.signing) }, []*x509.Certificate{relay.root.Cert}, nil, false},
		{"one from another CA is another issuer's",
			func() (*x509.Certificate, []*x509.Certificate) { return unbound(other.signing) }, []*x509.Certificate{relay.root.Cert}, nil, false},
		{"a binding written by another CA, which does not chain to the relay roots, does not make it the relay's",
			func() (*x509.Certificate, []*x509.Certificate) { return bound(other.signing, now) }, []*x509.Certificate{relay.root.Cert}, nil, false},
		{"a bound certificate whose intermediate is missing from tls.crt does not chain, and is not the relay's",
			func() (*x509.Certificate, []*x509.Certificate) {
				c, _ := bound(relay.signing, now)
				return c, nil
			}, []*x509.Certificate{relay.root.Cert}, nil, false},
		{"one the agent issued itself with the root key it holds is the agent's",
			func() (*x509.Certificate, []*x509.Certificate) { return unbound(relay.root) }, []*x509.Certificate{relay.root.Cert}, rootKey, true},
		{"one the root signed directly, when the agent holds no root key, is another issuer's",
			func() (*x509.Certificate, []*x509.Certificate) { return unbound(relay.root) }, []*x509.Certificate{relay.root.Cert}, nil, false},
		{"with no trust anchor nothing is the relay's",
			func() (*x509.Certificate, []*x509.Certificate) { return bound(relay.signing, now) }, nil, nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			leaf, chain := tc.cert()
			if got := issuedByRelay(leaf, chain, tc.roots, tc.rootKey, now); got != tc.want {
				t.Errorf("issued by the relay: %v, want %v", got, tc.want)
			}
		})
	}
}
