package pki

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"slices"
	"testing"
	"time"
)

// istioIntermediate signs a fresh P-256 key as cluster's Istio intermediate
// under ca and returns it with its key, as an agent would hold it.
func istioIntermediate(t *testing.T, ca *Certified, cluster string, ttl time.Duration) (*Issued, *Certified) {
	t.Helper()
	key := mustKey(t, ECDSAP256)
	issued, err := ca.SignIstioIntermediate(mustCSR(t, key, "whatever.example.com"), cluster, ttl, t0)
	if err != nil {
		t.Fatalf("SignIstioIntermediate(%s): %v", cluster, err)
	}
	return issued, &Certified{Cert: issued.Cert, Key: key, Issuers: issued.Chain[1:]}
}

func TestSignIstioIntermediateIsWhatIstioExpects(t *testing.T) {
	p := newTestPKI(t, ECDSAP256)
	issued, _ := istioIntermediate(t, p.root, "cluster-a", 24*time.Hour)
	c := issued.Cert
	if !c.IsCA || c.MaxPathLen != 0 || !c.MaxPathLenZero {
		t.Errorf("IsCA=%v MaxPathLen=%d MaxPathLenZero=%v, want a CA with path length 0", c.IsCA, c.MaxPathLen, c.MaxPathLenZero)
	}
	if c.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Errorf("key usage %b lacks keyCertSign", c.KeyUsage)
	}
	if !slices.Equal(c.DNSNames, []string{IstiodDNSName}) {
		t.Errorf("DNS names = %v, want only %s (the request's names are not used)", c.DNSNames, IstiodDNSName)
	}
	if got := c.Subject.String(); got != "CN=Intermediate CA,O=Istio,L=cluster-a" {
		t.Errorf("subject = %q", got)
	}
	if got := c.NotAfter.Sub(t0); got != 24*time.Hour {
		t.Errorf("lifetime after now = %s, want the TTL", got)
	}
	if want := t0.Add(-DefaultBackdate); !c.NotBefore.Equal(want) {
		t.Errorf("NotBefore = %s, want %s", c.NotBefore, want)
	}
	if len(issued.Chain) != 2 || !issued.Chain[1].Equal(p.root.Cert) {
		t.Errorf("chain has %d certificates, want the intermediate then the root", len(issued.Chain))
	}
	if got, err := DecodeCertificates(issued.CAPEM); err != nil || len(got) != 1 || !got[0].Equal(p.root.Cert) {
		t.Errorf("CAPEM is not the root: %v", err)
	}
}

// The point of federated trust: a workload certificate issued by one
// cluster's intermediate verifies against the root another cluster holds.
func TestIstioIntermediatesOfTwoClustersShareTheRoot(t *testing.T) {
	p := newTestPKI(t, ECDSAP256)
	_, a := istioIntermediate(t, p.root, "cluster-a", 24*time.Hour)
	issuedB, _ := istioIntermediate(t, p.root, "cluster-b", 24*time.Hour)
	leaf, err := a.IssueClient(Options{DNSNames: []string{"reviews.default.svc"}, TTL: time.Hour, Now: t0})
	if err != nil {
		t.Fatal(err)
	}
	_, err = IstioCAData(mustKey(t, ECDSAP256), issuedB.Chain, t0)
	wantErr(t, err, "does not match")
	rootOfB := issuedB.Chain[len(issuedB.Chain)-1]
	if _, err := VerifyChain(leaf.Cert, []*x509.Certificate{a.Cert}, []*x509.Certificate{rootOfB}, RoleClient, t0); err != nil {
		t.Errorf("cluster-a's workload does not verify against cluster-b's root: %v", err)
	}
	other := newTestPKI(t, ECDSAP256)
	if _, err := VerifyChain(leaf.Cert, []*x509.Certificate{a.Cert}, []*x509.Certificate{other.root.Cert}, RoleClient, t0); err == nil {
		t.Error("cluster-a's workload verified against an unrelated root")
	}
}

func TestIstioCADataIsAValidCacertsSecret(t *testing.T) {
	p := newTestPKI(t, ECDSAP256)
	issued, held := istioIntermediate(t, p.root, "cluster-a", time.Hour)
	data, err := IstioCAData(held.Key, issued.Chain, t0)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := DecodeCertificate(data[IstioCACertKey])
	if err != nil || !ca.Equal(issued.Cert) {
		t.Fatalf("ca-cert.pem is not the intermediate: %v", err)
	}
	chain, err := DecodeCertificates(data[IstioCertChainKey])
	if err != nil || len(chain) != 2 || !chain[0].Equal(issued.Cert) || !chain[1].Equal(p.root.Cert) {
		t.Fatalf("cert-chain.pem is not the intermediate then the root: %v", err)
	}
	root, err := DecodeCertificate(data[IstioRootCertKey])
	if err != nil || !root.Equal(p.root.Cert) {
		t.Fatalf("root-cert.pem is not the root: %v", err)
	}
	key, err := DecodePrivateKey(data[IstioCAKeyKey])
	if err != nil {
		t.Fatal(err)
	}
	if err := KeyMatchesCertificate(key, ca); err != nil {
		t.Errorf("ca-key.pem: %v", err)
	}
	_, err = IstioCAData(held.Key, issued.Chain[:1], t0)
	wantErr(t, err, "needs the intermediate and its root")
	_, err = IstioCAData(held.Key, []*x509.Certificate{issued.Cert, newTestPKI(t, ECDSAP256).root.Cert}, t0)
	wantErr(t, err, "does not verify")
}

func TestSignIstioIntermediateUnderAnIntermediateRootOfTrust(t *testing.T) {
	p := newTestPKI(t, ECDSAP256)
	// A CA that may sign one more CA below it: a root kept offline signed it.
	mid, err := issue(p.root, RoleRoot, Options{CommonName: "mesh-ca", TTL: 48 * time.Hour, Now: t0})
	if err != nil {
		t.Fatal(err)
	}
	issued, _ := istioIntermediate(t, mid, "cluster-a", 100*time.Hour)
	if len(issued.Chain) != 3 || !issued.Chain[1].Equal(mid.Cert) || !issued.Chain[2].Equal(p.root.Cert) {
		t.Fatalf("chain has %d certificates, want the intermediate, mesh-ca, then the root", len(issued.Chain))
	}
	if !issued.Cert.NotAfter.Equal(mid.Cert.NotAfter) {
		t.Errorf("NotAfter %s is not capped at the signer's %s", issued.Cert.NotAfter, mid.Cert.NotAfter)
	}
}

func TestSignIstioIntermediateRefuses(t *testing.T) {
	p := newTestPKI(t, ECDSAP256)
	key := mustKey(t, ECDSAP256)
	tampered := mustCSR(t, key, IstiodDNSName)
	tampered.Signature = slices.Clone(tampered.Signature)
	tampered.Signature[len(tampered.Signature)-3] ^= 0xff
	rsa1024, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	wrongKey := *p.root
	wrongKey.Key = mustKey(t, ECDSAP256)
	for _, tc := range []struct {
		name    string
		ca      *Certified
		csr     *x509.CertificateRequest
		cluster string
		ttl     time.Duration
		want    string
	}{
		{"a signer of path length 0", p.inter, mustCSR(t, key, IstiodDNSName), "cluster-a", time.Hour, "may not sign another CA"},
		{"a signer whose key is not its certificate's", &wrongKey, mustCSR(t, key, IstiodDNSName), "cluster-a", time.Hour, "root of trust"},
		{"a bad signature", p.root, tampered, "cluster-a", time.Hour, "signature does not verify"},
		{"a key not allowed", p.root, mustCSR(t, rsa1024, IstiodDNSName), "cluster-a", time.Hour, "is not allowed"},
		{"a cluster name with an underscore", p.root, mustCSR(t, key, IstiodDNSName), "cluster_a", time.Hour, "cluster"},
		{"no TTL", p.root, mustCSR(t, key, IstiodDNSName), "cluster-a", 0, "must be positive"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.ca.SignIstioIntermediate(tc.csr, tc.cluster, tc.ttl, t0)
			wantErr(t, err, tc.want)
			if got != nil {
				t.Error("a refused request returned a certificate")
			}
		})
	}
}
