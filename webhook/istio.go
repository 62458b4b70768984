package webhook

import (
	"bytes"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/meshrelay/meshrelay/pkg/pki"
)

// validateIstioCA checks cacerts: ca-cert.pem is a CA that may sign,
// ca-key.pem is its key, and cert-chain.pem (ca-cert.pem first, then its
// issuers) verifies to root-cert.pem.
func validateIstioCA(p *problems, sec *corev1.Secret, ratio float64, now time.Time) {
	ca, ok := decodeCerts(p, sec, pki.IstioCACertKey, "add Istio's intermediate CA certificate in PEM")
	if !ok {
		return
	}
	roots, ok := decodeCerts(p, sec, pki.IstioRootCertKey, "add the root CA certificate the mesh trusts")
	if !ok {
		return
	}
	chain, ok := decodeCerts(p, sec, pki.IstioCertChainKey, "add ca-cert.pem followed by its issuers up to the root")
	if !ok {
		return
	}
	if len(bytes.TrimSpace(sec.Data[pki.IstioCAKeyKey])) == 0 {
		p.deny(dataPath(pki.IstioCAKeyKey), "missing: add the private key of ca-cert.pem")
		return
	}
	pub, err := pki.PublicKeyOfPrivateKey(sec.Data[pki.IstioCAKeyKey])
	if err == nil {
		err = pki.PublicKeyMatchesCertificate(pub, ca[0])
	}
	if err != nil {
		p.denyErr(dataPath(pki.IstioCAKeyKey), err)
		return
	}
	if !chain[0].Equal(ca[0]) {
		p.deny(dataPath(pki.IstioCertChainKey), "does not start with ca-cert.pem's certificate %q: put ca-cert.pem first, then its issuers", ca[0].Subject.CommonName)
		return
	}
	if _, err := pki.VerifyChain(ca[0], chain[1:], roots, pki.RoleSigningCA, now); err != nil {
		p.deny(dataPath(pki.IstioCertChainKey), "does not verify to root-cert.pem: %v", err)
		return
	}
	if in, err := pki.InRotationWindow(ca[0], ratio, now); err == nil && in {
		p.warn("%s/%s: data[%s]: Istio's CA %q expires at %s, in %s: replace it", sec.Namespace, sec.Name, pki.IstioCACertKey,
			ca[0].Subject.CommonName, ca[0].NotAfter.UTC().Format(time.RFC3339), ca[0].NotAfter.Sub(now).Round(time.Minute))
	}
}
