package certgen

import (
	"bytes"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/meshrelay/meshrelay/internal/testenv"
	"github.com/meshrelay/meshrelay/pkg/pki"
	"github.com/meshrelay/meshrelay/pkg/relaysecret"
)

func readKustomization(t testing.TB, dir string) kustomization {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var k kustomization
	if err := yaml.UnmarshalStrict(data, &k); err != nil {
		t.Fatalf("%s/kustomization.yaml: %v", dir, err)
	}
	if k.APIVersion != "kustomize.config.k8s.io/v1beta1" || k.Kind != "Kustomization" {
		t.Errorf("%s/kustomization.yaml is %s %s", dir, k.APIVersion, k.Kind)
	}
	return k
}

func wantMode(t testing.TB, path string, want fs.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != want {
		t.Errorf("%s has mode %o, want %o", path, got, want)
	}
}

func TestSecretsFormatWritesOneFolderPerClusterThatParsesBack(t *testing.T) {
	sets := generate(t, TwoIntermediates, "cluster-1", "cluster-2")
	dir := t.TempDir()
	if err := WriteDir(dir, sets, FormatSecrets, false); err != nil {
		t.Fatal(err)
	}
	for _, set := range sets {
		cdir := filepath.Join(dir, set.Cluster)
		k := readKustomization(t, cdir)
		var wantResources []string
		for _, want := range set.Secrets {
			name := want.Name + ".yaml"
			wantResources = append(wantResources, name)
			data, err := os.ReadFile(filepath.Join(cdir, name))
			if err != nil {
				t.Fatal(err)
			}
			var got corev1.Secret
			if err := yaml.UnmarshalStrict(data, &got); err != nil {
				t.Fatalf("%s/%s: %v", set.Cluster, name, err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("%s/%s does not parse back into the secret", set.Cluster, name)
			}
			wantMode(t, filepath.Join(cdir, name), secretFileMode)
		}
		if !slices.Equal(k.Resources, wantResources) || k.SecretGenerator != nil {
			t.Errorf("%s kustomization resources = %v, generators %v; want %v", set.Cluster, k.Resources, k.SecretGenerator, wantResources)
		}
	}
}

func TestKustomizeFormatWritesTheDataAndASecretGenerator(t *testing.T) {
	sets := generate(t, SeparateRoots, "cluster-1")
	dir := t.TempDir()
	if err := WriteDir(dir, sets, FormatKustomize, false); err != nil {
		t.Fatal(err)
	}
	for _, set := range sets {
		cdir := filepath.Join(dir, set.Cluster)
		k := readKustomization(t, cdir)
		if k.GeneratorOptions == nil || !k.GeneratorOptions.DisableNameSuffixHash {
			t.Errorf("%s kustomization does not disable the name suffix hash", set.Cluster)
		}
		if len(k.Resources) != 0 || len(k.SecretGenerator) != len(set.Secrets) {
			t.Fatalf("%s kustomization has resources %v and %d generators, want %d generators", set.Cluster, k.Resources, len(k.SecretGenerator), len(set.Secrets))
		}
		for i, want := range set.Secrets {
			g := k.SecretGenerator[i]
			if g.Name != want.Name || g.Namespace != want.Namespace || g.Type != string(want.Type) {
				t.Errorf("%s generator %d = %s/%s %s, want %s/%s %s", set.Cluster, i, g.Namespace, g.Name, g.Type, want.Namespace, want.Name, want.Type)
			}
			got := map[string][]byte{}
			for _, f := range g.Files {
				key, path, _ := strings.Cut(f, "=")
				data, err := os.ReadFile(filepath.Join(cdir, path))
				if err != nil {
					t.Fatal(err)
				}
				got[key] = data
				wantMode(t, filepath.Join(cdir, path), secretFileMode)
			}
			if !reflect.DeepEqual(got, want.Data) {
				t.Errorf("%s %s: generator files do not hold the secret's data", set.Cluster, want.Name)
			}
		}
	}
	if typ := readKustomization(t, filepath.Join(dir, Management)).SecretGenerator[0].Type; typ != string(corev1.SecretTypeTLS) {
		t.Errorf("management's first generator has type %q, want kubernetes.io/tls", typ)
	}
}

func TestWriteDirRefusesToOverwriteWithoutForce(t *testing.T) {
	for _, format := range []Format{FormatSecrets, FormatKustomize} {
		t.Run(string(format), func(t *testing.T) {
			sets := generate(t, Single, "cluster-1")
			dir := t.TempDir()
			existing := filepath.Join(dir, "cluster-1", "kustomization.yaml")
			if err := os.MkdirAll(filepath.Dir(existing), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(existing, []byte("keep me\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			wantErr(t, WriteDir(dir, sets, format, false), existing, "already exists", "--force")
			if data, _ := os.ReadFile(existing); string(data) != "keep me\n" {
				t.Errorf("existing file was changed to %q", data)
			}
			if _, err := os.Stat(filepath.Join(dir, Management)); err == nil {
				t.Error("something was written before the refusal")
			}
			if err := WriteDir(dir, sets, format, true); err != nil {
				t.Fatalf("with force: %v", err)
			}
			if data, _ := os.ReadFile(existing); bytes.Equal(data, []byte("keep me\n")) {
				t.Error("force did not overwrite the existing file")
			}
			wantMode(t, existing, kustomizationMode)
			wantErr(t, WriteDir(dir, sets, format, false), "already exist", "--force")
		})
	}
}

// TestKustomizeBuildsTheSameSecrets runs the repository's kubectl on each
// folder, in both formats, and compares what it builds with the secrets.
func TestKustomizeBuildsTheSameSecrets(t *testing.T) {
	if testing.Short() {
		t.Skip("needs the local-cluster kubectl, which -short (make test-unit) does not use: run make test")
	}
	assets, err := testenv.AssetsDir()
	if err == nil {
		err = testenv.CheckAssets(assets, "kubectl")
	}
	if err != nil {
		t.Fatalf("no kubectl to build kustomizations with: %v", err)
	}
	kubectl := filepath.Join(assets, "kubectl")
	sets := generate(t, TwoIntermediates, "cluster-1")
	for _, format := range []Format{FormatSecrets, FormatKustomize} {
		t.Run(string(format), func(t *testing.T) {
			dir := t.TempDir()
			if err := WriteDir(dir, sets, format, false); err != nil {
				t.Fatal(err)
			}
			for _, set := range sets {
				out, err := exec.CommandContext(t.Context(), kubectl, "kustomize", filepath.Join(dir, set.Cluster)).Output()
				if err != nil {
					t.Fatalf("kubectl kustomize %s: %v", set.Cluster, err)
				}
				byName := map[string]corev1.Secret{}
				for _, doc := range bytes.Split(out, []byte("\n---\n")) {
					var s corev1.Secret
					if err := yaml.UnmarshalStrict(doc, &s); err != nil {
						t.Fatalf("kustomize output of %s: %v", set.Cluster, err)
					}
					byName[s.Namespace+"/"+s.Name] = s
				}
				if len(byName) != len(set.Secrets) {
					t.Errorf("%s builds %d secrets, want %d", set.Cluster, len(byName), len(set.Secrets))
				}
				for _, want := range set.Secrets {
					if got := byName[want.Namespace+"/"+want.Name]; !reflect.DeepEqual(got, want) {
						t.Errorf("%s builds %s/%s as %+v, want the generated secret", set.Cluster, want.Namespace, want.Name, got.ObjectMeta)
					}
				}
				if _, err := pki.DecodeCertificates(byName["gloo-mesh/relay-root-tls-secret"].Data[relaysecret.KeyCACert]); err != nil {
					t.Errorf("%s built root does not decode: %v", set.Cluster, err)
				}
			}
		})
	}
}
