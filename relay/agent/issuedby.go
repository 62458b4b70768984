package agent

import (
	"bytes"
	"crypto/x509"
	"time"

	"github.com/meshrelay/meshrelay/pkg/pki"
)

// issuedByRelay reports whether the agent's client certificate leaf (with
// the certificates after it in tls.crt, chain) was issued by the relay
// server, or by this agent itself with the root key, and so is the agent's
// to renew. Every other certificate (the user's own, cert-manager's,
// relayctl gen's) is only watched and used, never renewed or replaced.
//
// The rule reads the certificate itself, not an annotation beside it:
//   - relay-server binds every client certificate it signs to the
//     KubernetesCluster (the subject serialNumber meshrelay.dev/uid=<UID>,
//     pki.ClusterUID), which no other issuer of ours writes; and
//   - the certificate's signatures chain, through the intermediates in
//     tls.crt, to one of the agent's trust anchors (the relay roots).
//
// Writing the binding takes nothing, but a certificate with a binding that
// does not chain to the relay roots is not the relay's; chaining to them
// takes a CA key under the relay root, which only the relay's own signing
// CA (and the holders of the root key) have. Neither part names a
// particular intermediate or root, so the rule holds across our own
// rotations: a certificate from a new intermediate, or under a new root
// that joined the anchors, is still the relay's. The chain is checked at a
// time inside the certificate's validity, so that an expired certificate
// of the relay's is still recognised (and replaced), and an expired one of
// another issuer still is not.
//
// A certificate signed directly by the root whose key relay-root-tls-secret
// holds (rootKey, nil when it holds none) is the one this agent issued
// itself, and is renewed too.
func issuedByRelay(leaf *x509.Certificate, chain, roots []*x509.Certificate, rootKey *pki.Certified, now time.Time) bool {
	if rootKey != nil && bytes.Equal(leaf.RawIssuer, rootKey.Cert.RawSubject) && leaf.CheckSignatureFrom(rootKey.Cert) == nil {
		return true
	}
	if _, bound, err := pki.ClusterUID(leaf); !bound || err != nil || len(roots) == 0 {
		return false
	}
	at := now
	if at.After(leaf.NotAfter) {
		at = leaf.NotAfter
	}
	if at.Before(leaf.NotBefore) {
		at = leaf.NotBefore
	}
	opts := x509.VerifyOptions{
		Roots:         x509.NewCertPool(),
		Intermediates: x509.NewCertPool(),
		CurrentTime:   at,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}
	for _, r := range roots {
		opts.Roots.AddCert(r)
	}
	for _, c := range chain {
		opts.Intermediates.AddCert(c)
	}
	_, err := leaf.Verify(opts)
	return err == nil
}
