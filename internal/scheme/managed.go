package scheme

import (
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ManagedElsewhereAnnotation lets a user mark a relay secret as managed by
// their own tooling: relay-agent then never rotates it.
const ManagedElsewhereAnnotation = "meshrelay.dev/managed-elsewhere"

// managedAnnotationPrefixes mark a secret that another controller writes.
var managedAnnotationPrefixes = []string{"cert-manager.io/"}

// ManagedElsewhere reports whether another controller writes o: cert-manager
// (its annotations) or the user's tooling (ManagedElsewhereAnnotation=true).
// relay-agent only watches such a client secret; relayctl check takes such a
// server secret to mean relay-server's own CA is off.
func ManagedElsewhere(o metav1.Object) bool {
	for k, v := range o.GetAnnotations() {
		if k == ManagedElsewhereAnnotation && v == "true" {
			return true
		}
		for _, p := range managedAnnotationPrefixes {
			if strings.HasPrefix(k, p) {
				return true
			}
		}
	}
	return false
}
