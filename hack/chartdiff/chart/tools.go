package chart

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/meshrelay/meshrelay/internal/testenv"
)

// HelmEnv names the helm binary; make passes HELM=bin/tools/helm.
const HelmEnv = "HELM"

// Helm returns the path of the pinned helm binary: $HELM when set, else
// bin/tools/helm in the repository. It returns an error saying how to get
// it when neither is an executable file.
func Helm() (string, error) {
	root, err := testenv.RepoRoot()
	if err != nil {
		return "", err
	}
	pinned := filepath.Join(root, "bin", "tools", "helm")
	path := os.Getenv(HelmEnv)
	if path == "" {
		path = pinned
	}
	if fi, err := os.Stat(path); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
		return "", fmt.Errorf("helm not found at %s: run `make %s` (it builds the helm hack/tools/go.mod pins; make test and make verify do it) "+
			"and set %s to it, or set %s to another helm binary", path, pinned, HelmEnv, HelmEnv)
	}
	return path, nil
}

// Kubectl returns the path of the local clusters' kubectl, which renders
// the kustomize overlays (kubectl kustomize).
func Kubectl() (string, error) {
	dir, err := testenv.AssetsDir()
	if err != nil {
		return "", err
	}
	if err := testenv.CheckAssets(dir, testenv.Kubectl); err != nil {
		return "", err
	}
	return filepath.Join(dir, testenv.Kubectl), nil
}

// run runs a command and returns its stdout, or an error carrying its
// stderr.
func run(ctx context.Context, name string, args ...string) (string, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("failed to run %s %s: %w: %s", filepath.Base(name), strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}
