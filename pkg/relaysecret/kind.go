package relaysecret

import (
	"fmt"

	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/pkg/pki"
)

// Kind is one of the relay secrets.
type Kind int

// The relay secrets.
const (
	// Root is relay-root-tls-secret: ca.crt holds the root CA (several while
	// a root is being replaced); tls.crt and tls.key, when present, are the
	// root and its key.
	Root Kind = iota + 1
	// Signing is relay-tls-signing-secret: the intermediate CA that signs
	// client certificates, with its key and its root.
	Signing
	// Server is relay-server-tls-secret: relay-server's serving certificate,
	// whose DNS names cover the authority agents dial.
	Server
	// Client is relay-client-tls-secret: an agent's client certificate,
	// whose one DNS name is its cluster's name.
	Client
	// Token is relay-identity-token-secret: the identity token agents
	// bootstrap with.
	Token
	// IstioCA is Istio's plug-in CA secret, istio-system/cacerts: an
	// intermediate CA, its key, its chain and the mesh's root.
	IstioCA
	// TrustRoot is a RootTrustPolicy's root of trust, root-trust.<policy> or
	// the secret the policy names: a CA and its key that sign each
	// cluster's Istio intermediate.
	TrustRoot
)

// Data keys of the relay secrets.
const (
	KeyTLSCert = "tls.crt"
	KeyTLSKey  = "tls.key"
	KeyCACert  = "ca.crt"
	// KeyPreviousCACert, in the signing secret, holds the signing CA that
	// relay-server's rotation replaced: client certificates it issued are
	// still admitted until their agents renew.
	KeyPreviousCACert = "previous.crt"
	// KeyTrustRootCert and KeyTrustRootKey hold a generated root of trust,
	// as Istio's tooling names them.
	KeyTrustRootCert = "root-cert.pem"
	KeyTrustRootKey  = "key.pem"
)

// TrustRootPrefix starts the name of the root secret relay-server
// generates for a RootTrustPolicy: root-trust.<policy>.
const TrustRootPrefix = "root-trust."

// TrustRootName is the name of the root secret generated for policy.
func TrustRootName(policy string) string { return TrustRootPrefix + policy }

type spec struct {
	name        string
	defaultName string
	role        pki.Role
}

var specs = map[Kind]spec{
	Root:      {"root CA secret", config.DefaultRootTLSSecret, pki.RoleRoot},
	Signing:   {"signing CA secret", config.DefaultSigningTLSSecret, pki.RoleSigningCA},
	Server:    {"server secret", config.DefaultServerTLSSecret, pki.RoleServer},
	Client:    {"client secret", config.DefaultClientTLSSecret, pki.RoleClient},
	Token:     {name: "identity token secret", defaultName: config.DefaultTokenSecret},
	IstioCA:   {"Istio CA secret", config.DefaultIstioCASecret, pki.RoleSigningCA},
	TrustRoot: {"root of trust", TrustRootPrefix + "<policy>", pki.RoleRoot},
}

func (k Kind) String() string {
	if s, ok := specs[k]; ok {
		return s.name
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// DefaultName is the secret's default name, the one the compatible
// product's documentation uses.
func (k Kind) DefaultName() string { return specs[k].defaultName }

// Role is what the secret's certificate is for; a token has none (its
// Role is the zero value and means nothing).
func (k Kind) Role() pki.Role { return specs[k].role }
