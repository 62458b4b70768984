package testenv

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1alpha1 "github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
)

func TestThreeClustersStartAtOnceAndEachTakesAnObjectThroughKubectl(t *testing.T) {
	names := []string{"mgmt", "cluster-1", "cluster-2"}
	env := Start(t, Options{Names: names})
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()

	merged, err := clientcmd.LoadFromFile(env.Kubeconfig)
	if err != nil {
		t.Fatalf("failed to load merged kubeconfig: %v", err)
	}
	for _, name := range names {
		if _, ok := merged.Contexts[name]; !ok {
			t.Errorf("merged kubeconfig has no context %q; contexts: %v", name, merged.Contexts)
		}
		c := env.Cluster(name)
		if c == nil {
			t.Fatalf("Cluster(%q) = nil", name)
		}
		own, err := clientcmd.LoadFromFile(c.Kubeconfig)
		if err != nil {
			t.Fatalf("failed to load kubeconfig of %s: %v", name, err)
		}
		if own.CurrentContext != name || len(own.Contexts) != 1 {
			t.Errorf("kubeconfig of %s: current context %q with %d contexts, want only %q", name, own.CurrentContext, len(own.Contexts), name)
		}
	}
	hosts := map[string]string{}
	for _, c := range env.Clusters {
		if other, dup := hosts[c.Config.Host]; dup {
			t.Fatalf("clusters %s and %s share API server %s; each needs its own", other, c.Name, c.Config.Host)
		}
		hosts[c.Config.Host] = c.Name
	}

	for _, name := range names {
		manifest := fmt.Sprintf(`apiVersion: v1
kind: ConfigMap
metadata:
  name: whoami
  namespace: default
data:
  cluster: %s
`, name)
		if _, _, err := env.Kubectl(ctx, manifest, "--context", name, "apply", "-f", "-"); err != nil {
			t.Fatalf("apply to %s: %v", name, err)
		}
	}
	for _, name := range names {
		out, _, err := env.Kubectl(ctx, "", "--context", name, "get", "configmap", "whoami", "-o", "jsonpath={.data.cluster}")
		if err != nil {
			t.Fatalf("get from %s: %v", name, err)
		}
		if out != name {
			t.Errorf("configmap whoami in %s says cluster %q; clusters are not separate", name, out)
		}
		var cm corev1.ConfigMap
		if err := env.Cluster(name).Client.Get(ctx, types.NamespacedName{Namespace: "default", Name: "whoami"}, &cm); err != nil {
			t.Fatalf("client get from %s: %v", name, err)
		}
		if cm.Data["cluster"] != name {
			t.Errorf("client of %s reads cluster %q", name, cm.Data["cluster"])
		}
	}
}

func TestClustersServeMeshrelayCRDs(t *testing.T) {
	env := Start(t, Options{Names: []string{"mgmt"}})
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()

	good := `apiVersion: meshrelay.dev/v1alpha1
kind: KubernetesCluster
metadata:
  name: cluster-1
  namespace: default
spec: {}
`
	if _, _, err := env.Kubectl(ctx, good, "apply", "-f", "-"); err != nil {
		t.Fatalf("apply KubernetesCluster: %v", err)
	}
	var kc meshv1alpha1.KubernetesCluster
	if err := env.Clusters[0].Client.Get(ctx, client.ObjectKey{Namespace: "default", Name: "cluster-1"}, &kc); err != nil {
		t.Fatalf("get KubernetesCluster: %v", err)
	}
	if kc.Spec.ClusterDomain != "cluster.local" {
		t.Errorf("spec.clusterDomain = %q, want the CRD default cluster.local", kc.Spec.ClusterDomain)
	}

	bad := strings.ReplaceAll(good, "cluster-1", "cluster.one")
	_, _, err := env.Kubectl(ctx, bad, "apply", "-f", "-")
	if err == nil || !strings.Contains(err.Error(), "DNS-1123 label") {
		t.Errorf("apply of KubernetesCluster cluster.one: err = %v, want a denial naming DNS-1123 label", err)
	}
}

func TestControllerManagerTurnsDeploymentsIntoPods(t *testing.T) {
	env := Start(t, Options{Names: []string{"workload"}, ControllerManager: true})
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()

	deploy := `apiVersion: apps/v1
kind: Deployment
metadata:
  name: agent
  namespace: default
spec:
  replicas: 2
  selector:
    matchLabels: {app: agent}
  template:
    metadata:
      labels: {app: agent}
    spec:
      containers:
      - name: agent
        image: example.invalid/agent:v1
`
	if _, _, err := env.Kubectl(ctx, deploy, "apply", "-f", "-"); err != nil {
		t.Fatalf("apply Deployment: %v", err)
	}
	c := env.Clusters[0]
	Eventually(t, "Deployment agent has 2 Pods (kube-controller-manager log in "+c.Dir+")", 2*time.Minute, func() error {
		var pods corev1.PodList
		if err := c.Client.List(ctx, &pods, client.InNamespace("default"), client.MatchingLabels{"app": "agent"}); err != nil {
			return err
		}
		if len(pods.Items) != 2 {
			return fmt.Errorf("%d Pods", len(pods.Items))
		}
		return nil
	})
}

func TestStartRefusesNamesThatCannotBeContexts(t *testing.T) {
	for _, tc := range []struct {
		name  string
		names []string
		want  string
	}{
		{"no names at all are refused", nil, "no cluster names given"},
		{"an underscore in a name is refused", []string{"cluster_1"}, `"cluster_1" is not a DNS-1123 label`},
		{"a name given twice is refused", []string{"a", "a"}, `"a" is given twice`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := start(t.TempDir(), Options{Names: tc.names})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("start(%v) error = %v, want it to contain %q", tc.names, err, tc.want)
			}
		})
	}
}

func TestCheckAssetsNamesEveryMissingBinaryAndTheFix(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, Etcd), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, Kubectl), []byte("not executable"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := CheckAssets(dir, Etcd); err != nil {
		t.Errorf("CheckAssets with an executable etcd: %v", err)
	}
	err := CheckAssets(dir, Etcd, KubeAPIServer, Kubectl)
	if err == nil {
		t.Fatal("CheckAssets with kube-apiserver missing and kubectl not executable returned nil")
	}
	for _, want := range []string{"kube-apiserver, kubectl", dir, "make envtest-assets", AssetsEnv} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("CheckAssets error %q does not mention %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "etcd,") {
		t.Errorf("CheckAssets error %q names etcd, which is present", err)
	}
}

func TestStartFailsWhenABinaryIsMissing(t *testing.T) {
	t.Setenv(AssetsEnv, t.TempDir())
	_, err := start(t.TempDir(), Options{Names: []string{"mgmt"}})
	if err == nil || !strings.Contains(err.Error(), "etcd, kube-apiserver, kubectl") {
		t.Errorf("start with an empty assets folder: err = %v, want the missing binaries named", err)
	}
}

func TestKubernetesVersionFollowsTheAPIModule(t *testing.T) {
	for in, want := range map[string]string{"v0.37.2": "1.37.2", "v0.30.0": "1.30.0"} {
		got, err := kubeVersionOf(in)
		if err != nil || got != want {
			t.Errorf("kubeVersionOf(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := kubeVersionOf("v1.0.0"); err == nil {
		t.Error("kubeVersionOf(v1.0.0) returned no error")
	}
	v, err := KubernetesVersion()
	if err != nil || !strings.HasPrefix(v, "1.") {
		t.Errorf("KubernetesVersion() = %q, %v", v, err)
	}
}

// FreeAddr's ports are bindable and below the kernel's ephemeral range, so
// that no outgoing connection takes one before the process listens on it.
func TestFreeAddrIsBelowTheEphemeralRange(t *testing.T) {
	_, hi := belowEphemeral()
	for range 20 {
		addr, err := FreeAddr()
		if err != nil {
			t.Fatal(err)
		}
		_, port, err := net.SplitHostPort(addr)
		if err != nil {
			t.Fatal(err)
		}
		if n, _ := strconv.Atoi(port); n >= hi || n < hi-10000 {
			t.Errorf("FreeAddr gave %s, outside [%d, %d)", addr, hi-10000, hi)
		}
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("FreeAddr's %s cannot be bound: %v", addr, err)
		}
		l.Close()
	}
}
