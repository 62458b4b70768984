package rotation

import (
	"fmt"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
)

// Certificate names a certificate whose rotation can be asked for.
type Certificate string

// The certificates relay-server rotates on request.
const (
	Root         Certificate = "root"
	Intermediate Certificate = "intermediate"
	Server       Certificate = "server"
)

// Certificates lists every Certificate, in the order relayctl shows them.
var Certificates = []Certificate{Root, Intermediate, Server}

// ParseCertificate returns the Certificate named s.
func ParseCertificate(s string) (Certificate, error) {
	for _, c := range Certificates {
		if string(c) == s {
			return c, nil
		}
	}
	return "", fmt.Errorf("unknown certificate %q: rotate root, intermediate or server", s)
}

// SpecField is the RelayTrust spec field that asks for a rotation of c:
// rotateRoot, rotateIntermediate or rotateServer.
func (c Certificate) SpecField() string {
	return "rotate" + strings.ToUpper(string(c[:1])) + string(c[1:])
}

// Request returns spec's request for a rotation of c, nil when none.
func (c Certificate) Request(spec *v1alpha1.RelayTrustSpec) *v1alpha1.RotationRequest {
	return *c.requestField(spec)
}

// requestField is the field of spec that holds c's request.
func (c Certificate) requestField(spec *v1alpha1.RelayTrustSpec) **v1alpha1.RotationRequest {
	switch c {
	case Intermediate:
		return &spec.RotateIntermediate
	case Server:
		return &spec.RotateServer
	}
	return &spec.RotateRoot
}

// Observed returns the requestedAt of the last request for c that status
// says relay-server acted on, nil when none.
func (c Certificate) Observed(status *v1alpha1.RelayTrustStatus) *metav1.Time {
	switch c {
	case Intermediate:
		return status.ObservedRequests.Intermediate
	case Server:
		return status.ObservedRequests.Server
	}
	return status.ObservedRequests.Root
}

// Seen reports whether relay-server has acted on spec's request for c: no
// request is seen; a request is seen once status.observedRequests holds
// its requestedAt.
func (c Certificate) Seen(rt *v1alpha1.RelayTrust) bool {
	req := c.Request(&rt.Spec)
	if req == nil {
		return true
	}
	seen := c.Observed(&rt.Status)
	return seen != nil && seen.Equal(&req.RequestedAt)
}

// Rotations returns how many rotations of c status counts as done.
func (c Certificate) Rotations(status *v1alpha1.RelayTrustStatus) int64 {
	switch c {
	case Root:
		return status.Rotations.Root
	case Intermediate:
		return status.Rotations.Intermediate
	case Server:
		return status.Rotations.Server
	}
	return 0
}

// Describe names c in a sentence: root, signing intermediate, server
// certificate.
func (c Certificate) Describe() string {
	switch c {
	case Root:
		return "root"
	case Intermediate:
		return "signing intermediate"
	}
	return "server certificate"
}
