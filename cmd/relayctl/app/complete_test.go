package app

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshrelay/meshrelay/internal/command"
)

func TestContextFlagsCompleteToTheKubeconfigsContexts(t *testing.T) {
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {}}]
contexts:
  - {name: mgmt, context: {cluster: c, user: u}}
  - {name: cluster-1, context: {cluster: c, user: u}}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"register", "x", "--kubeconfig", kubeconfig, "--mgmt-context", ""},
		{"check", "--kubeconfig", kubeconfig, "--remote-context", ""},
		{"check", "--kubeconfig", kubeconfig, "--context", ""},
		{"revoke", "x", "--kubeconfig", kubeconfig, "--context", ""},
		{"backup", "--kubeconfig", kubeconfig, "--context", ""},
		{"restore", "--kubeconfig", kubeconfig, "--context", ""},
		{"rotate", "status", "--kubeconfig", kubeconfig, "--context", ""},
		{"rotate", "root", "--kubeconfig", kubeconfig, "--context", ""},
	} {
		var out, stderr bytes.Buffer
		cmd := NewCommand()
		cmd.SetOut(&out)
		if code := command.Run(t.Context(), cmd, append([]string{"__complete"}, args...), &stderr); code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, stderr.String())
		}
		if got := strings.Fields(out.String()); len(got) < 2 || got[0] != "cluster-1" || got[1] != "mgmt" {
			t.Errorf("completing %v: %q, want cluster-1 and mgmt", args, out.String())
		}
	}
}
