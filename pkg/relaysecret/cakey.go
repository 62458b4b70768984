package relaysecret

import (
	"crypto/x509"
	"fmt"
	"time"

	"github.com/meshrelay/meshrelay/pkg/pki"
)

// CAKeyExposure says what a CA private key kept on a workload cluster lets
// whoever controls that cluster do to the relay, when the CA chains to the
// relay root: m is a decoded secret holding a CA and its key (a Root with
// tls.key, Istio's cacerts); relayRoots are relay-root-tls-secret's ca.crt;
// clientIssuer is the CA that issues relay client certificates (the
// signing CA, or the issuer of this cluster's client certificate), nil
// when unknown. It returns "" when m holds no key, or its CA is not under
// the relay root. relay-webhook, relayctl check and relayctl gen all say it
// in these words.
func CAKeyExposure(m *Material, relayRoots []*x509.Certificate, clientIssuer *x509.Certificate, now time.Time) string {
	if m == nil || m.Key == nil || m.Cert == nil || !m.Cert.IsCA || len(relayRoots) == 0 {
		return ""
	}
	ca := pki.CAName(m.Cert)
	switch {
	case pki.ContainsCA(relayRoots, m.Cert):
		return fmt.Sprintf("holds the private key of the relay root %s: whoever controls this cluster can issue a relay server certificate that every agent accepts, "+
			"and client certificates for any cluster that relay-server admits when clientIssuerSecret lists the root (an agent that issues its own certificate); "+
			"keep the root key on the management cluster only and let agents bootstrap with a token", ca)
	case !underRoots(m, relayRoots, now):
		return ""
	case pki.SameCA(m.Cert, clientIssuer):
		return fmt.Sprintf("holds the private key of %s, the CA that issues relay client certificates: whoever controls this cluster can issue a client certificate for any cluster "+
			"and a relay server certificate that every agent accepts, and issuer pinning cannot refuse them; keep that key off workload clusters: "+
			"give Istio a CA of its own (relayctl gen --architecture two-intermediates, or separate-roots to share no root), "+
			"and issue client certificates from a CA whose key no workload cluster holds (relay-server's own CA, or Vault)", ca)
	default:
		return fmt.Sprintf("holds the private key of %s, a CA under the relay root: relay-server refuses the client certificates it issues, and agents holding a client certificate "+
			"refuse the server certificates it issues (issuer pinning), but an agent that bootstraps with its token pins the root only and would accept its server certificate, "+
			"and anything else that trusts the relay root accepts its certificates; give Istio a root of its own (relayctl gen --architecture separate-roots) to remove this", ca)
	}
}

// underRoots reports whether m's CA chains to one of roots, through the
// chain beside it.
func underRoots(m *Material, roots []*x509.Certificate, now time.Time) bool {
	_, err := pki.VerifyChain(m.Cert, m.Chain, roots, pki.RoleSigningCA, now)
	return err == nil
}
