package relaysecret

import (
	"k8s.io/apimachinery/pkg/types"

	"github.com/meshrelay/meshrelay/pkg/config"
)

// Names are the configured names of the relay secrets one component reads,
// and the key of the identity token.
type Names struct {
	Root, Signing, Server, Client, Token, IstioCA types.NamespacedName
	TokenKey                                      string
}

// ServerNames are the secrets relay-server reads, in its namespace.
func ServerNames(c *config.Server) Names {
	return Names{
		Root:     c.RootTLSSecret.NamespacedName(c.Namespace),
		Signing:  c.SigningTLSSecret.NamespacedName(c.Namespace),
		Server:   c.TLSSecret.NamespacedName(c.Namespace),
		Token:    c.TokenSecret.NamespacedName(c.Namespace),
		TokenKey: c.TokenSecret.Key,
	}
}

// AgentNames are the secrets relay-agent reads, in its namespace, and
// Istio's CA secret.
func AgentNames(c *config.Agent) Names {
	return Names{
		Root:     c.RootTLSSecret.NamespacedName(c.Namespace),
		Client:   c.ClientTLSSecret.NamespacedName(c.Namespace),
		Token:    c.TokenSecret.NamespacedName(c.Namespace),
		IstioCA:  c.IstioCASecret.NamespacedName(c.Namespace),
		TokenKey: c.TokenSecret.Key,
	}
}

// WebhookNames are the secrets relay-webhook checks: all of the relay's in
// its namespace, and Istio's CA secret.
func WebhookNames(c *config.Webhook) Names {
	return Names{
		Root:     c.RootTLSSecret.NamespacedName(c.Namespace),
		Signing:  c.SigningTLSSecret.NamespacedName(c.Namespace),
		Server:   c.TLSSecret.NamespacedName(c.Namespace),
		Client:   c.ClientTLSSecret.NamespacedName(c.Namespace),
		Token:    c.TokenSecret.NamespacedName(c.Namespace),
		IstioCA:  types.NamespacedName{Namespace: c.IstioNamespace, Name: c.IstioCASecret},
		TokenKey: c.TokenSecret.Key,
	}
}

// Of returns the name of the secret of kind k; empty for a kind these
// names do not cover.
func (n Names) Of(k Kind) types.NamespacedName {
	switch k {
	case Root:
		return n.Root
	case Signing:
		return n.Signing
	case Server:
		return n.Server
	case Client:
		return n.Client
	case Token:
		return n.Token
	case IstioCA:
		return n.IstioCA
	}
	return types.NamespacedName{}
}

// KindOf returns the kind of the secret named key, or false when it is not
// one of these relay secrets.
func (n Names) KindOf(key types.NamespacedName) (Kind, bool) {
	if key.Name == "" {
		return 0, false
	}
	for _, k := range []Kind{Root, Signing, Server, Client, Token, IstioCA} {
		if n.Of(k) == key {
			return k, true
		}
	}
	return 0, false
}
