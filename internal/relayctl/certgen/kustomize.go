package certgen

import (
	"fmt"
	"maps"
	"slices"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// kustomization is the part of kustomize's Kustomization that WriteDir
// writes.
type kustomization struct {
	APIVersion       string            `json:"apiVersion"`
	Kind             string            `json:"kind"`
	Resources        []string          `json:"resources,omitempty"`
	GeneratorOptions *generatorOptions `json:"generatorOptions,omitempty"`
	SecretGenerator  []secretGenerator `json:"secretGenerator,omitempty"`
}

type generatorOptions struct {
	DisableNameSuffixHash bool `json:"disableNameSuffixHash"`
}

type secretGenerator struct {
	Name      string   `json:"name"`
	Namespace string   `json:"namespace"`
	Type      string   `json:"type"`
	Files     []string `json:"files"`
}

func newKustomization() kustomization {
	return kustomization{APIVersion: "kustomize.config.k8s.io/v1beta1", Kind: "Kustomization"}
}

// generatorFor returns the secretGenerator entry of s, whose data files are
// "<secret name>/<key>" beside the kustomization, in key order.
func generatorFor(s *corev1.Secret) secretGenerator {
	g := secretGenerator{Name: s.Name, Namespace: s.Namespace, Type: string(s.Type)}
	for _, k := range slices.Sorted(maps.Keys(s.Data)) {
		g.Files = append(g.Files, k+"="+dataPath(s, k))
	}
	return g
}

// dataPath is where the kustomize format keeps data key k of s, relative
// to the cluster's folder.
func dataPath(s *corev1.Secret, k string) string { return s.Name + "/" + k }

func (k kustomization) marshal() ([]byte, error) {
	out, err := yaml.Marshal(k)
	if err != nil {
		return nil, fmt.Errorf("failed to encode kustomization: %w", err)
	}
	return out, nil
}
