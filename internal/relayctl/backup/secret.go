package backup

import (
	"fmt"
	"path/filepath"
	"slices"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/meshrelay/meshrelay/pkg/relaysecret"
)

// lastApplied is kubectl's annotation holding the last applied manifest:
// for a secret, its data again, so it is never saved or restored.
const lastApplied = corev1.LastAppliedConfigAnnotation

// DefaultNames returns the names of the relay secrets under the
// product's documented defaults: the root, the signing intermediate, the server
// certificate, the identity token and the agent's client certificate.
func DefaultNames() []string {
	var names []string
	for _, k := range []relaysecret.Kind{relaysecret.Root, relaysecret.Signing, relaysecret.Server, relaysecret.Token, relaysecret.Client} {
		names = append(names, k.DefaultName())
	}
	return names
}

// namesOr returns names, or DefaultNames when it is empty.
func namesOr(names []string) []string {
	if len(names) == 0 {
		return DefaultNames()
	}
	return names
}

// fileName returns the file a secret is saved in, under dir.
func fileName(dir, name string) string { return filepath.Join(dir, name+".yaml") }

// Clean returns the parts of s worth saving and restoring: apiVersion,
// kind, name, namespace, labels, annotations but kubectl's last applied
// configuration, type (Opaque when empty, as the API server defaults it)
// and data. Everything the API server sets (resourceVersion, uid,
// creationTimestamp, managedFields) and ownerReferences, whose owners
// would not exist after a loss, are left out.
func Clean(s *corev1.Secret) *corev1.Secret {
	out := &corev1.Secret{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{
			Name:        s.Name,
			Namespace:   s.Namespace,
			Labels:      copyMap(s.Labels),
			Annotations: copyMap(s.Annotations),
		},
		Type: s.Type,
		Data: make(map[string][]byte, len(s.Data)),
	}
	delete(out.Annotations, lastApplied)
	if len(out.Annotations) == 0 {
		out.Annotations = nil
	}
	if out.Type == "" {
		out.Type = corev1.SecretTypeOpaque
	}
	for k, v := range s.Data {
		out.Data[k] = slices.Clone(v)
	}
	return out
}

// Marshal returns the YAML manifest of Clean(s).
func Marshal(s *corev1.Secret) ([]byte, error) {
	doc, err := yaml.Marshal(Clean(s))
	if err != nil {
		return nil, fmt.Errorf("failed to encode secret %s/%s: %w", s.Namespace, s.Name, err)
	}
	return doc, nil
}

func copyMap(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
