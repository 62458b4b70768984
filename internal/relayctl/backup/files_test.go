package backup

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const validFile = `apiVersion: v1
kind: Secret
metadata:
  name: relay-identity-token-secret
  namespace: gloo-mesh
type: Opaque
data:
  token: dG9rZW4=
`

func TestLoadRefusesEveryInvalidFileByName(t *testing.T) {
	for _, tc := range []struct {
		name    string
		file    string
		content string
		want    string
	}{
		{"a ConfigMap is not a Secret", "cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: relay-root-tls-secret\n", `v1 ConfigMap "relay-root-tls-secret" is not a Secret`},
		{"a secret that is not a relay secret is refused", "other.yaml", strings.ReplaceAll(validFile, "relay-identity-token-secret", "db-password"), `secret "db-password" is not a relay secret`},
		{"bad YAML is refused", "broken.yaml", "apiVersion: v1\nkind: Secret\nmetadata: [\n", "invalid YAML"},
		{"an unknown field is refused", "typo.yaml", validFile + "dta:\n  x: eA==\n", `unknown field "dta"`},
		{"two documents in one file are refused", "two.yaml", validFile + "---\n" + strings.ReplaceAll(validFile, "relay-identity-token-secret", "relay-root-tls-secret"), "holds 2 objects"},
		{"an empty file is refused", "empty.yaml", "# nothing\n", "empty"},
		{"another namespace is refused with the flag that takes it", "ns.yaml", strings.ReplaceAll(validFile, "namespace: gloo-mesh", "namespace: relay"), "restore it with --namespace relay"},
		{"the same secret in two files is refused", "token-copy.yaml", validFile, "is also in"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeTestFile(t, dir, "relay-identity-token-secret.yaml", validFile)
			writeTestFile(t, dir, tc.file, tc.content)
			_, err := load(dir, "gloo-mesh", DefaultNames(), true)
			if err == nil {
				t.Fatal("load returned no error")
			}
			for _, want := range []string{filepath.Join(dir, tc.file), tc.want, "nothing was written"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
			}
		})
	}
}

func TestLoadTakesTheFolderNamespaceAndOrdersByName(t *testing.T) {
	dir := t.TempDir()
	writeTestFile(t, dir, "a.yaml", strings.ReplaceAll(validFile, "  namespace: gloo-mesh\n", ""))
	writeTestFile(t, dir, "b.yaml", strings.ReplaceAll(validFile, "relay-identity-token-secret", "relay-root-tls-secret"))
	writeTestFile(t, dir, "README.md", "not read")
	writeTestFile(t, dir, ".hidden.yaml", "not read either")
	got, err := load(dir, "gloo-mesh", DefaultNames(), true)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].secret.Name != "relay-root-tls-secret" || got[1].secret.Name != "relay-identity-token-secret" {
		t.Fatalf("load = %+v, want root then token", got)
	}
	if ns := got[1].secret.Namespace; ns != "gloo-mesh" {
		t.Errorf("a file without a namespace gives namespace %q, want gloo-mesh", ns)
	}
	if string(got[1].secret.Data["token"]) != "token" {
		t.Errorf("token = %q", got[1].secret.Data["token"])
	}
}

func TestLoadRefusesAFolderWithoutBackupFiles(t *testing.T) {
	dir := t.TempDir()
	if _, err := load(dir, "gloo-mesh", DefaultNames(), true); err == nil || !strings.Contains(err.Error(), "no .yaml files") {
		t.Errorf("empty folder: %v", err)
	}
	if _, err := load(filepath.Join(dir, "nope"), "gloo-mesh", DefaultNames(), true); err == nil {
		t.Error("missing folder: no error")
	}
}

func writeTestFile(t *testing.T, dir, name, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
