package pki

import (
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"strings"
	"time"
)

// A client certificate the relay signs is bound to one registration of its
// cluster: its subject carries the KubernetesCluster's UID in a
// serialNumber attribute (2.5.4.5) whose value is ClusterUIDPrefix followed
// by the UID. A cluster deleted and registered again under the same name
// gets a new UID, so the certificates of the earlier registration no longer
// match it.
//
// The binding is a subject attribute, not a private X.509 extension: an
// extension needs an object identifier of our own, the only one we could
// take without registering an arc is a UUID under 2.25 (ITU-T X.667), and
// Go's X.509 parser refuses a whole certificate whose extension identifier
// has a component above 2^31, as every UUID's is. A subject attribute is
// read by every parser, is not a subject alternative name (the cluster
// identity stays the one DNS name), and an issuer such as cert-manager can
// write it too (spec.subject.serialNumbers).

// ClusterUIDPrefix starts the subject serialNumber that binds a certificate
// to a KubernetesCluster's UID. A serialNumber without it is someone
// else's and is ignored.
const ClusterUIDPrefix = "meshrelay.dev/uid="

// MaxClusterUIDLength bounds a bound UID: a subject serialNumber holds at
// most 64 characters (RFC 5280 ub-serial-number), the prefix included.
const MaxClusterUIDLength = 64 - len(ClusterUIDPrefix)

// oidSerialNumber is the subject attribute type serialNumber.
var oidSerialNumber = asn1.ObjectIdentifier{2, 5, 4, 5}

// CheckClusterUID reports whether uid can bind a certificate: 1 to
// MaxClusterUIDLength letters, digits and '-', as Kubernetes UIDs (UUIDs)
// are.
func CheckClusterUID(uid string) error {
	if uid == "" || len(uid) > MaxClusterUIDLength {
		return fmt.Errorf("cluster UID %q must have 1 to %d characters", uid, MaxClusterUIDLength)
	}
	for _, r := range uid {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
			return fmt.Errorf("cluster UID %q may hold only letters, digits and '-'", uid)
		}
	}
	return nil
}

// ClusterUID returns the KubernetesCluster UID cert is bound to. ok is
// false when cert carries no binding (a certificate of another issuer, or
// of a relay before bindings); err is set when it carries a malformed one:
// a UID that CheckClusterUID refuses, or two bindings.
func ClusterUID(cert *x509.Certificate) (uid string, ok bool, err error) {
	for _, atv := range cert.Subject.Names {
		if !atv.Type.Equal(oidSerialNumber) {
			continue
		}
		v, isString := atv.Value.(string)
		if !isString {
			continue // not a string: not a binding
		}
		rest, found := strings.CutPrefix(v, ClusterUIDPrefix)
		if !found {
			continue // someone else's serialNumber
		}
		if ok {
			return "", false, errors.New("certificate carries two cluster bindings")
		}
		if err := CheckClusterUID(rest); err != nil {
			return "", false, fmt.Errorf("certificate's cluster binding: %w", err)
		}
		uid, ok = rest, true
	}
	return uid, ok, nil
}

// IssuedAt is when cert was issued, as far as the certificate tells. For a
// certificate bound to a cluster (one the relay signed, see ClusterUID) it
// is NotBefore plus the backdate the relay's signer applied by default,
// which is DefaultBackdate or a tenth of the requested lifetime, whichever
// is shorter: min(DefaultBackdate, (NotAfter − NotBefore) / 11). For any
// other certificate it is NotBefore. A lifetime capped by the signing CA's
// expiry gives an earlier time than the true one, never a later one.
func IssuedAt(cert *x509.Certificate) time.Time {
	if _, bound, err := ClusterUID(cert); !bound || err != nil {
		return cert.NotBefore
	}
	lifetime := cert.NotAfter.Sub(cert.NotBefore)
	if lifetime <= 0 {
		return cert.NotBefore
	}
	return cert.NotBefore.Add(min(DefaultBackdate, lifetime/11))
}
