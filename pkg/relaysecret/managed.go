package relaysecret

import (
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
)

// managedAnnotationPrefixes mark a secret that another controller writes.
var managedAnnotationPrefixes = []string{"cert-manager.io/"}

// ManagedElsewhere reports whether another controller writes the secret o:
// cert-manager (its annotations) or the user's tooling
// (v1alpha1.ManagedElsewhereAnnotation=true). relay-agent only watches such
// a client secret; relayctl check takes such a server secret to mean
// relay-server's own CA is off.
func ManagedElsewhere(o metav1.Object) bool {
	for k, v := range o.GetAnnotations() {
		if k == v1alpha1.ManagedElsewhereAnnotation && v == "true" {
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
