package certgen

import (
	"fmt"
	"os"
	"path/filepath"

	corev1 "k8s.io/api/core/v1"

	"github.com/meshrelay/meshrelay/internal/relayctl/keyfiles"
)

// Format is how WriteDir lays out a cluster's secrets.
type Format string

const (
	// FormatSecrets writes each Secret as a YAML file, listed as resources
	// in the folder's kustomization.yaml.
	FormatSecrets Format = "secrets"
	// FormatKustomize writes each Secret's data as files, one folder per
	// Secret, and a kustomization.yaml whose secretGenerator makes the
	// Secrets from them under their exact names.
	FormatKustomize Format = "kustomize"
)

// ParseFormat returns the Format named s.
func ParseFormat(s string) (Format, error) {
	switch f := Format(s); f {
	case FormatSecrets, FormatKustomize:
		return f, nil
	}
	return "", fmt.Errorf("unknown format %q: use %s or %s", s, FormatSecrets, FormatKustomize)
}

// Modes of what WriteDir writes: everything but the kustomization holds
// or sits beside private keys.
const (
	dirMode           = 0o755
	secretFileMode    = 0o600
	kustomizationMode = 0o644
)

// WriteDir writes each cluster's secrets under dir/<cluster>/ (the
// management cluster's under dir/management/) in format, with a
// kustomization.yaml in each folder, so that "kubectl apply -k
// dir/<cluster>" applies them. Before writing anything it refuses a file
// that already exists, naming it, unless force, which replaces it.
func WriteDir(dir string, sets []ClusterSecrets, format Format, force bool) error {
	if _, err := ParseFormat(string(format)); err != nil {
		return err
	}
	var files []keyfiles.File
	for _, set := range sets {
		planned, err := planCluster(filepath.Join(dir, set.Cluster), set.Secrets, format)
		if err != nil {
			return fmt.Errorf("cluster %s: %w", set.Cluster, err)
		}
		files = append(files, planned...)
	}
	if !force {
		exist, err := keyfiles.Existing(files)
		if err != nil {
			return err
		}
		if len(exist) > 0 {
			return keyfiles.ExistsError(exist...)
		}
	}
	for _, f := range files {
		if err := os.MkdirAll(filepath.Dir(f.Path), dirMode); err != nil {
			return fmt.Errorf("failed to create folder %s: %w", filepath.Dir(f.Path), err)
		}
		if err := keyfiles.Write(f, force); err != nil {
			return err
		}
	}
	return nil
}

// planCluster returns the files of one cluster's folder.
func planCluster(dir string, secrets []corev1.Secret, format Format) ([]keyfiles.File, error) {
	k := newKustomization()
	var files []keyfiles.File
	names := map[string]bool{}
	for i := range secrets {
		s := &secrets[i]
		if names[s.Name] {
			return nil, fmt.Errorf("two secrets are named %s: they would share a file", s.Name)
		}
		names[s.Name] = true
		if format == FormatKustomize {
			k.SecretGenerator = append(k.SecretGenerator, generatorFor(s))
			for key, data := range s.Data {
				files = append(files, keyfiles.File{Path: filepath.Join(dir, filepath.FromSlash(dataPath(s, key))), Data: data, Mode: secretFileMode})
			}
			continue
		}
		doc, err := marshalSecret(s)
		if err != nil {
			return nil, err
		}
		name := s.Name + ".yaml"
		k.Resources = append(k.Resources, name)
		files = append(files, keyfiles.File{Path: filepath.Join(dir, name), Data: doc, Mode: secretFileMode})
	}
	if format == FormatKustomize {
		k.GeneratorOptions = &generatorOptions{DisableNameSuffixHash: true}
	}
	doc, err := k.marshal()
	if err != nil {
		return nil, err
	}
	return append(files, keyfiles.File{Path: filepath.Join(dir, "kustomization.yaml"), Data: doc, Mode: kustomizationMode}), nil
}
