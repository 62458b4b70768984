package localmesh

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"

	"github.com/meshrelay/meshrelay/internal/testenv"
)

// mountWait bounds how long a Secret or ConfigMap a pod mounts may take to
// appear (cert-manager issuing the webhook's certificate, say): the kubelet
// would keep the pod in ContainerCreating that long.
const mountWait = 2 * time.Minute

// Local is what a local process must change in what its Deployment runs:
// no kubelet mounts its token and no Service reaches it.
type Local struct {
	// Pod is the pod name fieldRef metadata.name resolves to.
	Pod string
	// LogName names the log file under the mesh's Dir.
	LogName string
	// Flags are appended after the Deployment's args and --kubeconfig:
	// listen and metrics addresses, the server address agents dial.
	Flags []string
	// Extra are appended last: a test's deliberate changes.
	Extra []string
	// Prepare, when set, is called with what the pod runs (its mounts
	// written locally) before it starts.
	Prepare func(*Pod) error
	// Untracked leaves the process out of the mesh's Stop: the caller
	// stops it (a test that kills replicas and restarts them).
	Untracked bool
}

// hostnameEnv is set to the pod name where the Deployment sets no such
// variable: the binaries fall back to the host name, which in a pod is
// the pod's name and here is the machine's, the same for every process.
const hostnameEnv = "POD_NAME"

// DeploymentOf returns the name of the one Deployment in objs whose
// container runs binary.
func DeploymentOf(objs []*unstructured.Unstructured, binary string) (string, error) {
	var names []string
	for _, u := range objs {
		if u.GetKind() != "Deployment" {
			continue
		}
		cs, _, _ := unstructured.NestedSlice(u.Object, "spec", "template", "spec", "containers")
		for _, c := range cs {
			cmd, _, _ := unstructured.NestedStringSlice(c.(map[string]any), "command")
			if len(cmd) > 0 && filepath.Base(cmd[0]) == binary {
				names = append(names, u.GetName())
			}
		}
	}
	if len(names) != 1 {
		return "", fmt.Errorf("the rendering holds %d Deployments running %s %v, want 1", len(names), binary, names)
	}
	return names[0], nil
}

// Rendered returns the objects last installed on cluster by Install, or
// nil when nothing was.
func (m *Mesh) Rendered(cluster string) []*unstructured.Unstructured {
	return m.rendered[cluster]
}

// runs reports whether the rendering installed on cluster has a
// Deployment running binary, and its name.
func (m *Mesh) runs(cluster, binary string) (string, bool) {
	objs := m.rendered[cluster]
	if objs == nil {
		return "", false
	}
	name, err := DeploymentOf(objs, binary)
	return name, err == nil
}

// StartDeployment runs, on cluster, one pod of the Deployment named
// deployment of the rendering installed there, as written: its container's
// command, args and environment, as its ServiceAccount (a token from
// TokenRequest), with only what local changes. Secrets, ConfigMaps and
// projected volumes that an argument or an environment variable refers to
// through a volume mount are read from the cluster into a folder, and the
// argument or variable points there; a projected volume (a secret's keys,
// ClusterTrustBundles) is kept current while the process runs, as the
// kubelet keeps it. POD_NAME, where the Deployment does not set it, is the
// pod name, as the host name is in a pod. It returns the process and what
// it runs.
func (m *Mesh) StartDeployment(ctx context.Context, cluster, deployment string, local Local) (*testenv.Process, *Pod, error) {
	objs := m.rendered[cluster]
	if objs == nil {
		return nil, nil, fmt.Errorf("nothing is installed on cluster %s: call Install first", cluster)
	}
	pod, err := PodOf(objs, deployment, local.Pod)
	if err != nil {
		return nil, nil, err
	}
	c := m.Env.Cluster(cluster)
	if c == nil {
		return nil, nil, fmt.Errorf("no cluster %s", cluster)
	}
	dir := filepath.Join(m.Dir, "pods", cluster, local.Pod)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, err
	}
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := ServiceAccountKubeconfig(ctx, c, pod.Namespace, pod.ServiceAccount, kubeconfig); err != nil {
		return nil, nil, err
	}
	args, env := pod.Args, pod.Env
	var projected []*projectedVolume
	for i, mnt := range pod.Mounts {
		to := filepath.Join(dir, fmt.Sprintf("volume-%d", i))
		if mnt.Projected != nil {
			v, err := writeProjected(ctx, c, pod.Namespace, mnt, to)
			if err != nil {
				return nil, nil, fmt.Errorf("deployment %s/%s: %w", pod.Namespace, deployment, err)
			}
			projected = append(projected, v)
		} else if err := writeMount(ctx, c, pod.Namespace, mnt, to); err != nil {
			return nil, nil, fmt.Errorf("deployment %s/%s: %w", pod.Namespace, deployment, err)
		}
		args = rewriteMount(args, mnt.Path, to)
		env = rewriteMount(env, mnt.Path, to)
		pod.Mounts[i].Path = to
	}
	pod.Env = env
	pod.Args = append(append(append(args, "--kubeconfig", kubeconfig), local.Flags...), local.Extra...)
	if local.Prepare != nil {
		if err := local.Prepare(pod); err != nil {
			return nil, nil, err
		}
	}
	bin := filepath.Join(m.Bins, pod.Binary)
	if _, err := os.Stat(bin); err != nil {
		return nil, nil, fmt.Errorf("deployment %s/%s runs %s, which is not among the built binaries in %s", pod.Namespace, deployment, pod.Binary, m.Bins)
	}
	env = pod.Env
	if !slices.ContainsFunc(env, func(e string) bool { return strings.HasPrefix(e, hostnameEnv+"=") }) {
		env = append(slices.Clip(env), hostnameEnv+"="+pod.Name)
	}
	p, err := testenv.StartProcessEnv(bin, filepath.Join(m.Dir, local.LogName+".log"), env, pod.Args...)
	if err != nil {
		return nil, nil, err
	}
	if len(projected) > 0 {
		go syncProjected(p, projected)
	}
	if !local.Untracked {
		m.processes = append(m.processes, p)
	}
	return p, pod, nil
}

// writeMount writes the keys of the Secret or ConfigMap mnt names into
// folder to, one file per key as the kubelet does, waiting for the object
// to exist as the kubelet would.
func writeMount(ctx context.Context, c *testenv.Cluster, namespace string, mnt Mount, to string) error {
	key := types.NamespacedName{Namespace: namespace, Name: mnt.Name}
	files := map[string][]byte{}
	deadline := time.Now().Add(mountWait)
	for {
		var err error
		switch mnt.Kind {
		case "Secret":
			var s corev1.Secret
			if err = c.Client.Get(ctx, key, &s); err == nil {
				files = s.Data
			}
		case "ConfigMap":
			var cm corev1.ConfigMap
			if err = c.Client.Get(ctx, key, &cm); err == nil {
				for k, v := range cm.Data {
					files[k] = []byte(v)
				}
				for k, v := range cm.BinaryData {
					files[k] = v
				}
			}
		}
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the %s %s it mounts at %s did not appear within %s: %w", mnt.Kind, key, mnt.Path, mountWait, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
	if err := os.MkdirAll(to, 0o700); err != nil {
		return err
	}
	for k, v := range files {
		if err := os.WriteFile(filepath.Join(to, k), v, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// podName returns the name of the pod number i of deployment, stable
// across restarts so that a restarted process finds what it left, as the
// local processes did under the host's name.
func podName(deployment string, i int) string { return fmt.Sprintf("%s-local-%d", deployment, i) }

// envValueOf returns the value of key in env (KEY=value each), the last
// one set.
func envValueOf(env []string, key string) string {
	v := ""
	for _, e := range env {
		if k, val, ok := strings.Cut(e, "="); ok && k == key {
			v = val
		}
	}
	return v
}
