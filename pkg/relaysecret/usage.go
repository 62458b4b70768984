package relaysecret

import (
	"crypto/x509"
	"slices"
)

// UsageVerdict is how the peer's handshake takes a leaf's extended key
// usages.
type UsageVerdict int

const (
	// UsageAccepted: the leaf names the usage it is verified for, or any.
	UsageAccepted UsageVerdict = iota
	// UsageUnrestricted: the leaf has no extended key usage, which
	// crypto/x509 takes as valid for every usage. Accepted, but the usage
	// should be stated.
	UsageUnrestricted
	// UsageRefused: the leaf names usages, none of them the one it is
	// verified for; the handshake fails.
	UsageRefused
)

// ExtKeyUsage is the usage a leaf of kind k is verified for at the
// handshake: server auth for Server (relay-agent verifies it), client auth
// for Client (relay-server verifies it); false for the other kinds.
func (k Kind) ExtKeyUsage() (x509.ExtKeyUsage, bool) {
	switch k {
	case Server:
		return x509.ExtKeyUsageServerAuth, true
	case Client:
		return x509.ExtKeyUsageClientAuth, true
	}
	return 0, false
}

// JudgeExtKeyUsages says how the handshake takes a leaf of kind k whose
// extended key usages are ekus, as crypto/x509 verifies it for the kind's
// ExtKeyUsage: none at all or "any" or that usage pass, anything else
// fails. Kinds verified for no usage accept every list.
func (k Kind) JudgeExtKeyUsages(ekus []x509.ExtKeyUsage) UsageVerdict {
	want, ok := k.ExtKeyUsage()
	switch {
	case !ok:
		return UsageAccepted
	case len(ekus) == 0:
		return UsageUnrestricted
	case slices.Contains(ekus, want), slices.Contains(ekus, x509.ExtKeyUsageAny):
		return UsageAccepted
	}
	return UsageRefused
}
