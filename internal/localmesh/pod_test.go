package localmesh

import (
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/meshrelay/meshrelay/internal/testenv"
)

// render returns the objects of overlay (relative to manifests/overlays)
// as kubectl kustomize builds them.
func render(t *testing.T, overlay string) string {
	t.Helper()
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
	out, err := exec.Command(filepath.Join(assets, testenv.Kubectl), "kustomize", filepath.Join(root, "manifests", "overlays", overlay)).Output()
	if err != nil {
		t.Fatalf("kubectl kustomize %s: %v", overlay, err)
	}
	return string(out)
}

func podOf(t *testing.T, stream, deployment string) *Pod {
	t.Helper()
	objs, err := Objects(stream)
	if err != nil {
		t.Fatal(err)
	}
	p, err := PodOf(objs, deployment, "pod-0")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPodOfTheOverlays(t *testing.T) {
	t.Run("relay-server of the management overlay: its ServiceAccount, args and POD_NAME from the pod's name", func(t *testing.T) {
		p := podOf(t, render(t, "management"), "gloo-mesh-mgmt-server")
		if p.Binary != "relay-server" || p.ServiceAccount != "relay-server" || p.Namespace != "gloo-mesh" {
			t.Errorf("binary %q, ServiceAccount %q, namespace %q", p.Binary, p.ServiceAccount, p.Namespace)
		}
		if !slices.Contains(p.Args, "--namespace=gloo-mesh") || !slices.Contains(p.Env, "POD_NAME=pod-0") {
			t.Errorf("args %v, env %v", p.Args, p.Env)
		}
		if len(p.Mounts) != 0 {
			t.Errorf("mounts %v, want none", p.Mounts)
		}
	})
	t.Run("relay-agent of the workload overlay: the settings ConfigMap's keys as its environment", func(t *testing.T) {
		p := podOf(t, render(t, "workload"), "relay-agent")
		if p.ServiceAccount != "relay-agent" {
			t.Errorf("ServiceAccount %q", p.ServiceAccount)
		}
		for _, want := range []string{"MESHRELAY_CLUSTER=cluster-1", "MESHRELAY_SERVER_ADDRESS=gloo-mesh-mgmt-server.gloo-mesh:9900", "MESHRELAY_AUTHORITY=gloo-mesh-mgmt-server.gloo-mesh"} {
			if !slices.Contains(p.Env, want) {
				t.Errorf("env %v lacks %s", p.Env, want)
			}
		}
	})
	t.Run("relay-webhook of the cert-manager overlay: the mounted secret its --cert-dir names", func(t *testing.T) {
		p := podOf(t, render(t, "cert-manager/workload"), "relay-webhook")
		want := []Mount{{Path: "/etc/relay-webhook/tls", Kind: "Secret", Name: "relay-webhook-cert-manager-tls"}}
		if !slices.Equal(p.Mounts, want) {
			t.Errorf("mounts %v, want %v", p.Mounts, want)
		}
		got := rewriteMount(p.Args, "/etc/relay-webhook/tls", "/tmp/x")
		if !slices.Contains(got, "--cert-dir=/tmp/x") || servesFromFiles(&Pod{Args: got}) != "/tmp/x" {
			t.Errorf("rewritten args %v", got)
		}
	})
}

const brokenDeployment = `apiVersion: apps/v1
kind: Deployment
metadata: {name: d, namespace: ns}
spec:
  template:
    spec:
      containers:
        - name: c
          command: [/bin/thing, sub]
          args: [--a=1]
          env:
            - {name: LIT, value: x}
            - name: FROM_CM
              valueFrom: {configMapKeyRef: {name: settings, key: k}}
`

func TestPodOfResolvesAndRefuses(t *testing.T) {
	cm := "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings, namespace: ns}\ndata: {k: v}\n"
	tests := []struct {
		name, stream, deployment, wantErr string
		check                             func(*Pod) bool
	}{
		{"command words come before args and a configMapKeyRef reads the rendered ConfigMap", brokenDeployment + "---\n" + cm, "d", "",
			func(p *Pod) bool {
				return p.Binary == "thing" && slices.Equal(p.Args, []string{"sub", "--a=1"}) && slices.Equal(p.Env, []string{"LIT=x", "FROM_CM=v"}) && p.ServiceAccount == "default"
			}},
		{"a ConfigMap the rendering lacks is named", brokenDeployment, "d", "ConfigMap ns/settings, which the rendering does not hold", nil},
		{"a Deployment the rendering lacks is named", cm, "d", "no Deployment named d", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			objs, err := Objects(tc.stream)
			if err != nil {
				t.Fatal(err)
			}
			p, err := PodOf(objs, tc.deployment, "pod-0")
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tc.check(p) {
				t.Errorf("pod %+v", p)
			}
		})
	}
}
