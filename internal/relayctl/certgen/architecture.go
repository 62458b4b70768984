package certgen

import (
	"fmt"
	"strings"
	"time"

	"github.com/meshrelay/meshrelay/pkg/pki"
	"github.com/meshrelay/meshrelay/pkg/relaysecret"
)

// Architecture is one of the reference's certificate architectures. In all
// of them the relay server and its agents share one root and one
// intermediate, which signs the server certificate and every client
// certificate; they differ in what Istio's CA (istio-system/cacerts in each
// workload cluster) shares with the relay.
type Architecture string

const (
	// Single is one root and one intermediate that signs the relay's
	// certificates and is also Istio's CA in every workload cluster. It is the
	// simplest: the intermediate's key is in every workload cluster, which can
	// therefore issue relay client certificates too.
	Single Architecture = "single"
	// TwoIntermediates is one root with two intermediates: one signs the
	// relay's certificates and stays in the management cluster, the other is
	// Istio's CA in every workload cluster.
	TwoIntermediates Architecture = "two-intermediates"
	// SeparateRoots gives the relay and Istio each their own root and
	// intermediate, so that relay traffic and mesh traffic share no root of
	// trust.
	SeparateRoots Architecture = "separate-roots"
)

// Architectures lists every Architecture, simplest first.
var Architectures = []Architecture{Single, TwoIntermediates, SeparateRoots}

// ParseArchitecture returns the Architecture named s.
func ParseArchitecture(s string) (Architecture, error) {
	for _, a := range Architectures {
		if string(a) == s {
			return a, nil
		}
	}
	return "", fmt.Errorf("unknown architecture %q: use %s", s, architectureList())
}

func architectureList() string {
	names := make([]string, len(Architectures))
	for i, a := range Architectures {
		names[i] = string(a)
	}
	return strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
}

// authorities are the CAs of an architecture.
type authorities struct {
	// relayRoot is the root the relay server and agents trust.
	relayRoot *pki.Certified
	// relaySigning is the intermediate that signs the server certificate and
	// the client certificates: relay-tls-signing-secret.
	relaySigning *pki.Certified
	// meshCA is Istio's CA in every workload cluster; its chain ends at the
	// mesh root (relayRoot unless SeparateRoots).
	meshCA *pki.Certified
}

// newAuthorities makes the roots and intermediates of arch, with the
// lifetimes relay-server gives the CAs it makes (relaysecret.RootLifetime
// and SigningLifetime).
func newAuthorities(arch Architecture, now time.Time) (*authorities, error) {
	organization := []string{relaysecret.Organization}
	ca := func(parent *pki.Certified, cn string) (*pki.Certified, error) {
		if parent == nil {
			return pki.NewRootCA(pki.Options{CommonName: cn, Organization: organization, TTL: relaysecret.RootLifetime, Now: now})
		}
		return parent.NewIntermediateCA(pki.Options{CommonName: cn, Organization: organization, TTL: relaysecret.SigningLifetime, Now: now})
	}
	var a authorities
	var err error
	if a.relayRoot, err = ca(nil, relaysecret.RootCommonName); err != nil {
		return nil, err
	}
	if a.relaySigning, err = ca(a.relayRoot, relaysecret.SigningCommonName); err != nil {
		return nil, err
	}
	switch arch {
	case Single:
		a.meshCA = a.relaySigning
	case TwoIntermediates:
		a.meshCA, err = ca(a.relayRoot, "meshrelay-mesh-ca")
	case SeparateRoots:
		var meshRoot *pki.Certified
		if meshRoot, err = ca(nil, "meshrelay-mesh-root-ca"); err == nil {
			a.meshCA, err = ca(meshRoot, "meshrelay-mesh-ca")
		}
	default:
		_, err = ParseArchitecture(string(arch))
	}
	if err != nil {
		return nil, err
	}
	return &a, nil
}
