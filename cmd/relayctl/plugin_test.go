package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshrelay/meshrelay/internal/testenv"
)

// TestKubectlRunsRelayctlAsThePluginRelay builds relayctl, puts it on the
// PATH as kubectl-relay, as make build does, and runs it through a real
// kubectl: `kubectl relay ...` is relayctl, presenting itself as
// `kubectl relay`, with its exit status passed through.
func TestKubectlRunsRelayctlAsThePluginRelay(t *testing.T) {
	assets, err := testenv.AssetsDir()
	if err != nil {
		t.Fatal(err)
	}
	if err := testenv.CheckAssets(assets, testenv.Kubectl); err != nil {
		t.Fatal(err)
	}
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	bin := t.TempDir()
	build := exec.CommandContext(t.Context(), "go", "build", "-o", filepath.Join(bin, "relayctl"), "./cmd/relayctl")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/relayctl: %v\n%s", err, out)
	}
	if err := os.Symlink("relayctl", filepath.Join(bin, "kubectl-relay")); err != nil {
		t.Fatal(err)
	}
	home := t.TempDir()
	kubectl := func(args ...string) (string, string, int) {
		t.Helper()
		cmd := exec.CommandContext(t.Context(), filepath.Join(assets, testenv.Kubectl), args...)
		cmd.Env = append(os.Environ(), "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"), "HOME="+home, "KUBECONFIG="+filepath.Join(home, "none"))
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		err := cmd.Run()
		code := 0
		if exit, ok := errors.AsType[*exec.ExitError](err); ok {
			code = exit.ExitCode()
		} else if err != nil {
			t.Fatalf("kubectl %s: %v", strings.Join(args, " "), err)
		}
		return out.String(), errOut.String(), code
	}

	t.Run("kubectl plugin list finds it", func(t *testing.T) {
		out, stderr, code := kubectl("plugin", "list", "--name-only")
		if code != 0 || !strings.Contains(out, "kubectl-relay") {
			t.Errorf("kubectl plugin list: exit %d, %q %q; want kubectl-relay", code, out, stderr)
		}
	})
	t.Run("kubectl relay version names itself kubectl relay", func(t *testing.T) {
		out, stderr, code := kubectl("relay", "version")
		if code != 0 || !strings.HasPrefix(out, "kubectl relay ") {
			t.Errorf("kubectl relay version: exit %d, %q %q; want \"kubectl relay <version>\"", code, out, stderr)
		}
	})
	t.Run("its help shows the usage lines kubectl users type", func(t *testing.T) {
		out, _, code := kubectl("relay", "check", "--help")
		for _, want := range []string{"kubectl relay check [--context MGMT]", "  kubectl relay check --context mgmt --remote-context cluster-1", "--request-timeout", "-n, --namespace"} {
			if code != 0 || !strings.Contains(out, want) {
				t.Errorf("kubectl relay check --help: exit %d, lacks %q:\n%s", code, want, out)
			}
		}
		if strings.Contains(out, "relayctl check --") {
			t.Errorf("kubectl relay check --help still shows relayctl's usage:\n%s", out)
		}
	})
	t.Run("its exit status passes through kubectl", func(t *testing.T) {
		if _, stderr, code := kubectl("relay", "check", "--request-timeout", "soon"); code != 2 {
			t.Errorf("kubectl relay check with a bad flag: exit %d, want 2: %s", code, stderr)
		}
		if _, stderr, code := kubectl("relay", "validate", "-f", filepath.Join(home, "none.yaml")); code != 1 {
			t.Errorf("kubectl relay validate of a missing file: exit %d, want 1: %s", code, stderr)
		}
	})
}
