package app

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/meshrelay/meshrelay/pkg/pki"
	"github.com/meshrelay/meshrelay/pkg/relaysecret"
)

// runGen runs "relayctl gen" with args and returns its stdout.
func runGen(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := newCommandAs("relayctl")
	var out, errOut bytes.Buffer
	cmd.SetArgs(append([]string{"gen"}, args...))
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SilenceUsage = true
	cmd.SilenceErrors = true
	err := cmd.ExecuteContext(t.Context())
	return out.String(), err
}

func TestGenWritesAFolderPerClusterIntoOut(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	out, err := runGen(t, "--architecture", "separate-roots", "--clusters", "east, west", "--out", dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"management: 3 secrets in " + filepath.Join(dir, "management"),
		"east: 3 secrets in " + filepath.Join(dir, "east"),
		"kubectl apply -k " + filepath.Join(dir, "west"),
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output does not say %q:\n%s", want, out)
		}
	}
	for _, f := range []string{
		"management/kustomization.yaml", "management/relay-root-tls-secret.yaml", "management/relay-tls-signing-secret.yaml", "management/relay-server-tls-secret.yaml",
		"east/kustomization.yaml", "east/relay-root-tls-secret.yaml", "east/relay-client-tls-secret.yaml", "east/cacerts.yaml",
		"west/relay-client-tls-secret.yaml",
	} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("missing %s: %v", f, err)
		}
	}
	data, err := os.ReadFile(filepath.Join(dir, "west", "relay-client-tls-secret.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var s corev1.Secret
	if err := yaml.UnmarshalStrict(data, &s); err != nil {
		t.Fatal(err)
	}
	if _, err := relaysecret.Load(relaysecret.Client, map[string][]byte{relaysecret.KeyTLSCert: s.Data[relaysecret.KeyTLSCert], relaysecret.KeyTLSKey: s.Data[relaysecret.KeyTLSKey], relaysecret.KeyCACert: s.Data[relaysecret.KeyCACert]}, "", relaysecret.Context{Cluster: "west", Now: time.Now()}); err != nil {
		t.Errorf("west's client secret does not validate: %v", err)
	}

	if _, err := runGen(t, "--architecture", "single", "--clusters", "east", "--out", dir); err == nil || !strings.Contains(err.Error(), "--force") {
		t.Errorf("a second run into the same folder: %v, want a refusal naming --force", err)
	}
	if _, err := runGen(t, "--architecture", "single", "--clusters", "east", "--out", dir, "--force"); err != nil {
		t.Errorf("with --force: %v", err)
	}
}

func TestGenKustomizeFormatWritesPEMFiles(t *testing.T) {
	dir := t.TempDir()
	if _, err := runGen(t, "--architecture", "two-intermediates", "--clusters", "east", "--out", dir, "--format", "kustomize"); err != nil {
		t.Fatal(err)
	}
	kust, err := os.ReadFile(filepath.Join(dir, "east", "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"secretGenerator:", "disableNameSuffixHash: true", "type: kubernetes.io/tls", "tls.crt=relay-client-tls-secret/tls.crt"} {
		if !strings.Contains(string(kust), want) {
			t.Errorf("kustomization.yaml does not contain %q:\n%s", want, kust)
		}
	}
	crt, err := os.ReadFile(filepath.Join(dir, "east", "relay-client-tls-secret", "tls.crt"))
	if err != nil {
		t.Fatal(err)
	}
	certs, err := pki.DecodeCertificates(crt)
	if err != nil {
		t.Fatal(err)
	}
	if name, err := pki.ClientIdentity(certs[0]); err != nil || name != "east" {
		t.Errorf("client certificate identity = %q, %v; want east", name, err)
	}
}

func TestGenWithoutOutPrintsAStreamOfSecrets(t *testing.T) {
	out, err := runGen(t, "--architecture", "single", "--clusters", "east,west")
	if err != nil {
		t.Fatal(err)
	}
	docs := strings.Split(out, "\n---\n")
	if len(docs) != 9 {
		t.Fatalf("stream has %d documents, want 3 for management and 3 per cluster", len(docs))
	}
	for i, doc := range docs {
		wantCluster := []string{"management", "east", "west"}[i/3]
		if !strings.HasPrefix(doc, "# cluster: "+wantCluster+"\n") {
			t.Errorf("document %d does not start with the comment for %s: %.40q", i+1, wantCluster, doc)
		}
		var s corev1.Secret
		if err := yaml.UnmarshalStrict([]byte(doc), &s); err != nil || s.Kind != "Secret" {
			t.Errorf("document %d is not a Secret: %v", i+1, err)
		}
	}
}

func TestGenRefusesBadArgumentsBeforeWritingAnything(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"an unknown architecture names the known ones", []string{"--architecture", "triple", "--clusters", "a"}, "use single, two-intermediates or separate-roots"},
		{"a missing architecture names the known ones", []string{"--clusters", "a"}, `unknown architecture ""`},
		{"a cluster name with an underscore names the fix", []string{"--architecture", "single", "--clusters", "cluster_1"}, `use "cluster-1"`},
		{"a duplicate cluster is refused", []string{"--architecture", "single", "--clusters", "a,a"}, `"a" is listed twice`},
		{"no clusters are refused", []string{"--architecture", "single"}, "no workload clusters"},
		{"kustomize without a folder asks for one", []string{"--architecture", "single", "--clusters", "a", "--format", "kustomize"}, "add --out DIR"},
		{"an unknown format names the known ones", []string{"--architecture", "single", "--clusters", "a", "--format", "helm"}, "use secrets or kustomize"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "out")
			args := tc.args
			if !slices.Contains(args, "kustomize") {
				args = append(args, "--out", dir)
			}
			out, err := runGen(t, args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
				t.Errorf("error = %v, want one line containing %q", err, tc.want)
			}
			if _, serr := os.Stat(dir); serr == nil || out != "" {
				t.Errorf("something was written before the refusal: %q", out)
			}
		})
	}
}
