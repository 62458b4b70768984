package pki

import "crypto/x509"

// Role is what a certificate is for; it decides the key usages the
// certificate is given and the ones a chain is verified with.
type Role int

// The roles of the relay's certificates.
const (
	// RoleRoot is a self-signed CA: relay-root-tls-secret.
	RoleRoot Role = iota
	// RoleSigningCA is an intermediate CA that signs leaves and no other CA
	// (path length 0): relay-tls-signing-secret.
	RoleSigningCA
	// RoleServer is the relay server's serving certificate: relay-server-tls-secret.
	RoleServer
	// RoleClient is an agent's client certificate: relay-client-tls-secret.
	RoleClient
)

func (r Role) String() string {
	switch r {
	case RoleRoot:
		return "root CA"
	case RoleSigningCA:
		return "signing CA"
	case RoleServer:
		return "server"
	case RoleClient:
		return "client"
	}
	return "unknown role"
}

func (r Role) isCA() bool { return r == RoleRoot || r == RoleSigningCA }

// keyUsage returns the key usage bits of a certificate of role r with a key
// of algorithm alg: only RSA keys encipher keys in TLS key exchange.
func (r Role) keyUsage(alg Algorithm) x509.KeyUsage {
	if r.isCA() {
		return x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature
	}
	if alg == RSA {
		return x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment
	}
	return x509.KeyUsageDigitalSignature
}

// extKeyUsage returns the extended key usages of a leaf of role r. A
// server certificate is only ever presented by the relay server, so it gets
// server auth alone; one made elsewhere with client auth as well (as the
// documented cert-manager Certificates do) still verifies, since a chain is
// verified only for the usage of its role.
func (r Role) extKeyUsage() []x509.ExtKeyUsage {
	switch r {
	case RoleServer:
		return []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	case RoleClient:
		return []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	return nil
}

// verifyUsage is the usage a chain of role r is verified for.
func (r Role) verifyUsage() []x509.ExtKeyUsage {
	switch r {
	case RoleServer:
		return []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	case RoleClient:
		return []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	return []x509.ExtKeyUsage{x509.ExtKeyUsageAny}
}
