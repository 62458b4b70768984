package testenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/tools/clientcmd"
)

// Options says which clusters Start brings up.
type Options struct {
	// Names of the clusters to start, at least one. Each name is a DNS-1123
	// label and becomes the cluster's context in the merged kubeconfig.
	Names []string
	// ControllerManager also runs kube-controller-manager in every cluster,
	// so that Deployments make ReplicaSets and Pods.
	ControllerManager bool
	// CRDDirs are the folders of CRDs installed into every cluster. Empty
	// means the repository's manifests/crds.
	CRDDirs []string
	// CertManager also runs cert-manager's controller in every cluster and
	// installs its release's CRDs (every cert-manager.io kind), from
	// CertManagerDir; leave hack/crds/cert-manager out of CRDDirs then.
	CertManager bool
}

// Env is a set of running local clusters.
type Env struct {
	// Clusters are in the order of Options.Names.
	Clusters []*Cluster
	// Kubeconfig is the path of the merged kubeconfig, one context per cluster.
	Kubeconfig string
	// Dir holds the kubeconfigs and every process's logs.
	Dir string

	kubectl string
}

// Start starts every cluster in opts at once and stops them all when the test
// ends. It fails the test, saying what is missing and how to get it, when a
// binary is missing or a cluster does not come up.
func Start(t testing.TB, opts Options) *Env {
	t.Helper()
	if testing.Short() {
		t.Skip("needs local clusters, which -short (make test-unit) does not start: run make test")
	}
	env, err := start(t.TempDir(), opts)
	if env != nil {
		t.Cleanup(func() {
			if t.Failed() {
				env.logTails(t)
			}
			if err := env.Stop(); err != nil {
				t.Errorf("failed to stop local clusters: %v", err)
			}
		})
	}
	if err != nil {
		t.Fatalf("failed to start local clusters: %v", err)
	}
	return env
}

// StartIn starts every cluster in opts at once, keeping their files in dir,
// for programs such as make demo; tests use Start. On an error the clusters
// that did start are in the returned Env: stop them with Stop.
func StartIn(dir string, opts Options) (*Env, error) { return start(dir, opts) }

func start(dir string, opts Options) (*Env, error) {
	if len(opts.Names) == 0 {
		return nil, errors.New("no cluster names given: set Options.Names")
	}
	seen := map[string]bool{}
	for _, name := range opts.Names {
		if msgs := validation.IsDNS1123Label(name); len(msgs) > 0 {
			return nil, fmt.Errorf("cluster name %q is not a DNS-1123 label: %s", name, strings.Join(msgs, "; "))
		}
		if seen[name] {
			return nil, fmt.Errorf("cluster name %q is given twice", name)
		}
		seen[name] = true
	}
	assets, err := AssetsDir()
	if err != nil {
		return nil, err
	}
	need := []string{Etcd, KubeAPIServer, Kubectl}
	if opts.ControllerManager {
		need = append(need, KubeControllerManager)
	}
	if err := CheckAssets(assets, need...); err != nil {
		return nil, err
	}
	crdDirs := opts.CRDDirs
	if len(crdDirs) == 0 {
		root, err := RepoRoot()
		if err != nil {
			return nil, err
		}
		crdDirs = []string{filepath.Join(root, "manifests", "crds")}
	}
	certManager := ""
	if opts.CertManager {
		if certManager, err = CertManagerDir(); err != nil {
			return nil, err
		}
		if err := CheckCertManager(certManager); err != nil {
			return nil, err
		}
		crdDirs = append(slices.Clip(crdDirs), filepath.Join(certManager, "crds"))
	}

	env := &Env{Dir: dir, Clusters: make([]*Cluster, len(opts.Names)), kubectl: filepath.Join(assets, Kubectl)}
	errs := make([]error, len(opts.Names))
	var wg sync.WaitGroup
	for i, name := range opts.Names {
		wg.Go(func() {
			cdir := filepath.Join(dir, name)
			if errs[i] = os.MkdirAll(cdir, 0o755); errs[i] != nil {
				return
			}
			env.Clusters[i], errs[i] = startCluster(name, cdir, assets, crdDirs, opts.ControllerManager, certManager)
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return env, err
	}
	env.Kubeconfig = filepath.Join(dir, "kubeconfig")
	if err := clientcmd.WriteToFile(*kubeconfigFor(env.Clusters), env.Kubeconfig); err != nil {
		return env, fmt.Errorf("failed to write merged kubeconfig: %w", err)
	}
	return env, nil
}

// Cluster returns the cluster with the given name, or nil.
func (e *Env) Cluster(name string) *Cluster {
	for _, c := range e.Clusters {
		if c != nil && c.Name == name {
			return c
		}
	}
	return nil
}

// Stop stops every cluster at once. Start's cleanup calls it; calling it
// again does nothing.
func (e *Env) Stop() error {
	errs := make([]error, len(e.Clusters))
	var wg sync.WaitGroup
	for i, c := range e.Clusters {
		if c == nil {
			continue
		}
		e.Clusters[i] = nil
		wg.Go(func() { errs[i] = c.stop() })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// KubectlCmd returns a kubectl command using the merged kubeconfig; pick a
// cluster with "--context", NAME among args.
func (e *Env) KubectlCmd(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, e.kubectl, args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+e.Kubeconfig)
	return cmd
}

// Kubectl runs kubectl with args and stdin (may be empty) and returns its
// output. A non-zero exit is an error that carries stderr.
func (e *Env) Kubectl(ctx context.Context, stdin string, args ...string) (stdout, stderr string, err error) {
	cmd := e.KubectlCmd(ctx, args...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), errb.String(), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), errb.String(), nil
}

// MustKubectl is Kubectl for a test: it fails t when kubectl fails, with
// the command and its stderr, and returns the output otherwise.
func (e *Env) MustKubectl(ctx context.Context, t testing.TB, stdin string, args ...string) string {
	t.Helper()
	out, _, err := e.Kubectl(ctx, stdin, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// logTails logs the end of every process log, so that a failed test shows
// why a cluster misbehaved before its folder is removed.
func (e *Env) logTails(t testing.TB) {
	logs, _ := filepath.Glob(filepath.Join(e.Dir, "*", "*.log"))
	for _, path := range logs {
		rel, _ := filepath.Rel(e.Dir, path)
		t.Logf("last lines of %s:\n%s", rel, TailFile(path, 15))
	}
}
