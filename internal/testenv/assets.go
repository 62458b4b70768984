package testenv

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
)

// Binary names that a local cluster needs.
const (
	Etcd                  = "etcd"
	KubeAPIServer         = "kube-apiserver"
	KubeControllerManager = "kube-controller-manager"
	Kubectl               = "kubectl"
)

// AssetsEnv is the environment variable that names the folder of
// control-plane binaries, as controller-runtime's envtest reads it.
const AssetsEnv = "KUBEBUILDER_ASSETS"

// KubernetesVersion returns the Kubernetes version matching the k8s.io/api
// module the project requires: v0.37.2 gives "1.37.2". It reads the build
// info of the running binary and, where that lacks dependencies (test
// binaries), the repository's go.mod.
func KubernetesVersion() (string, error) {
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, dep := range info.Deps {
			if dep.Path == "k8s.io/api" {
				return kubeVersionOf(dep.Version)
			}
		}
	}
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	data, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		return "", fmt.Errorf("failed to read go.mod: %w", err)
	}
	for line := range strings.Lines(string(data)) {
		fields := strings.Fields(strings.TrimPrefix(strings.TrimSpace(line), "require "))
		if len(fields) >= 2 && fields[0] == "k8s.io/api" {
			return kubeVersionOf(fields[1])
		}
	}
	return "", fmt.Errorf("failed to find k8s.io/api in %s", filepath.Join(root, "go.mod"))
}

func kubeVersionOf(apiVersion string) (string, error) {
	v, ok := strings.CutPrefix(apiVersion, "v0.")
	if !ok {
		return "", fmt.Errorf("failed to map k8s.io/api %s to a Kubernetes version: want v0.MINOR.PATCH", apiVersion)
	}
	return "1." + v, nil
}

// AssetsDir returns the folder holding the control-plane binaries:
// $KUBEBUILDER_ASSETS when set, otherwise bin/k8s/<version>-<os>-<arch> in
// the repository, where `make envtest-assets` builds them.
func AssetsDir() (string, error) {
	if dir := os.Getenv(AssetsEnv); dir != "" {
		return dir, nil
	}
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	version, err := KubernetesVersion()
	if err != nil {
		return "", err
	}
	return filepath.Join(root, "bin", "k8s", fmt.Sprintf("%s-%s-%s", version, runtime.GOOS, runtime.GOARCH)), nil
}

// CheckAssets returns an error naming every binary in names that is missing
// from dir or not executable, and how to provide it.
func CheckAssets(dir string, names ...string) error {
	var missing []string
	for _, name := range names {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			missing = append(missing, name)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	return fmt.Errorf("local cluster binaries missing from %s: %s; run `make envtest-assets` "+
		"(it downloads them with setup-envtest where it can, and otherwise builds them, about ten minutes the first time), or set %s to a folder that holds them",
		dir, strings.Join(missing, ", "), AssetsEnv)
}

// RepoRoot returns the meshrelay repository root: the nearest folder above
// this source file, or else above the working directory, holding the
// project's go.mod.
func RepoRoot() (string, error) {
	var starts []string
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		starts = append(starts, filepath.Dir(file))
	}
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	for _, dir := range starts {
		for {
			data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
			if err == nil && strings.HasPrefix(string(data), "module github.com/meshrelay/meshrelay\n") {
				return dir, nil
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				break
			}
			dir = parent
		}
	}
	return "", errors.New("failed to find the meshrelay repository root: run the tests from inside the repository")
}
