package pki

import (
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"
	"time"
)

// Keys of Istio's plug-in CA secret, istio-system/cacerts.
const (
	IstioCACertKey    = "ca-cert.pem"
	IstioCAKeyKey     = "ca-key.pem"
	IstioCertChainKey = "cert-chain.pem"
	IstioRootCertKey  = "root-cert.pem"
)

// IstiodDNSName is the DNS SAN of an Istio intermediate CA, as Istio's
// plug-in CA configuration sets it.
const IstiodDNSName = "istiod.istio-system.svc"

// IstioIntermediateSubject is the subject of cluster's Istio intermediate
// CA: O=Istio, CN=Intermediate CA, L=cluster, as the documented openssl
// configuration of an Istio intermediate CA has it.
func IstioIntermediateSubject(cluster string) pkix.Name {
	return pkix.Name{Organization: []string{"Istio"}, CommonName: "Intermediate CA", Locality: []string{cluster}}
}

// SignIstioIntermediate signs csr with c as cluster's Istio intermediate
// CA: a CA of path length 0 (it signs workload certificates, no other CA),
// DNS SAN istiod.istio-system.svc and IstioIntermediateSubject(cluster),
// living ttl (capped by c's expiry) from a backdate of at most ttl/10.
// Only the request's key is used: its signature must verify and the key be
// one of DefaultAllowedKeys; whatever names it asks for, the certificate
// carries the ones above. c must be a CA that may sign a CA below it. The
// returned chain is verified to c's root before it is returned.
func (c *Certified) SignIstioIntermediate(csr *x509.CertificateRequest, cluster string, ttl time.Duration, now time.Time) (*Issued, error) {
	if err := CheckDNSLabel(cluster); err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	if ttl <= 0 {
		return nil, fmt.Errorf("intermediate TTL %s must be positive", ttl)
	}
	if !c.Cert.IsCA || (c.Cert.MaxPathLen == 0 && c.Cert.MaxPathLenZero) {
		return nil, fmt.Errorf("CA %q may not sign another CA (it is not a CA, or its path length is 0): use a root, or an intermediate whose path length allows one more CA", c.Cert.Subject.CommonName)
	}
	if err := KeyMatchesCertificate(c.Key, c.Cert); err != nil {
		return nil, fmt.Errorf("root of trust: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("certificate request signature does not verify: %w", err)
	}
	if err := checkAllowed(csr.PublicKey, DefaultAllowedKeys); err != nil {
		return nil, fmt.Errorf("certificate request: %w", err)
	}
	spec, _ := KeySpecOf(csr.PublicKey)
	tmpl, err := template(RoleSigningCA, spec.Algorithm, "", []string{IstiodDNSName}, now.Add(-backdateWithin(0, ttl)), now.Add(ttl))
	if err != nil {
		return nil, err
	}
	tmpl.Subject = IstioIntermediateSubject(cluster)
	if err := capValidity(tmpl, c.Cert, now); err != nil {
		return nil, err
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.Cert, csr.PublicKey, c.Key)
	if err != nil {
		return nil, fmt.Errorf("failed to sign the intermediate CA: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("failed to parse the signed intermediate CA: %w", err)
	}
	root := c.Root()
	above := append([]*x509.Certificate{c.Cert}, c.Issuers...)
	if _, err := VerifyChain(cert, above, []*x509.Certificate{root}, RoleSigningCA, now); err != nil {
		return nil, fmt.Errorf("signed intermediate CA failed verification, not returned: %w", err)
	}
	if pub, ok := cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(csr.PublicKey) {
		return nil, errors.New("signed intermediate CA failed verification, not returned: its key differs from the request's")
	}
	// above ends with the root: c.Issuers does, or c is the root.
	chain := append([]*x509.Certificate{cert}, above...)
	return &Issued{
		Cert:    cert,
		Chain:   chain,
		CertPEM: EncodeCertificates(chain...),
		CAPEM:   EncodeCertificates(root),
	}, nil
}

// IstioCAData returns the data of istio-system/cacerts for an intermediate
// CA with key, given its chain from the intermediate to the root inclusive:
// ca-cert.pem, ca-key.pem, cert-chain.pem (the whole chain) and
// root-cert.pem. It checks that the key is the intermediate's and that the
// chain verifies at now.
func IstioCAData(key crypto.Signer, chain []*x509.Certificate, now time.Time) (map[string][]byte, error) {
	if len(chain) < 2 {
		return nil, fmt.Errorf("intermediate chain has %d certificates: it needs the intermediate and its root", len(chain))
	}
	if err := KeyMatchesCertificate(key, chain[0]); err != nil {
		return nil, err
	}
	root := chain[len(chain)-1]
	if _, err := VerifyChain(chain[0], chain[1:len(chain)-1], []*x509.Certificate{root}, RoleSigningCA, now); err != nil {
		return nil, err
	}
	keyPEM, err := EncodePrivateKey(key)
	if err != nil {
		return nil, err
	}
	return map[string][]byte{
		IstioCACertKey:    EncodeCertificates(chain[0]),
		IstioCAKeyKey:     keyPEM,
		IstioCertChainKey: EncodeCertificates(chain...),
		IstioRootCertKey:  EncodeCertificates(root),
	}, nil
}

// Fingerprint returns the hex SHA-256 of cert's DER encoding.
func Fingerprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return hex.EncodeToString(sum[:])
}
