package chart

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/meshrelay/meshrelay/internal/testenv"
)

func decodeOne(t *testing.T, doc string) Object {
	t.Helper()
	objs, err := Decode(doc)
	if err != nil || len(objs) != 1 {
		t.Fatalf("Decode: %v, %d objects", err, len(objs))
	}
	return objs[0]
}

func TestNormalise(t *testing.T) {
	for name, tc := range map[string]struct{ in, want string }{
		"helm's chart and managed-by labels and the version label are dropped, the others kept": {
			in:   `{kind: Service, metadata: {name: s, labels: {helm.sh/chart: meshrelay-0.1.0, app.kubernetes.io/managed-by: Helm, app.kubernetes.io/version: v0.1.0, app.kubernetes.io/name: relay-server}}}`,
			want: `{kind: Service, metadata: {name: s, labels: {app.kubernetes.io/name: relay-server}}}`,
		},
		"a pod template's checksum annotation and its labels are cleaned, other annotations kept": {
			in:   `{kind: Deployment, metadata: {name: d}, spec: {template: {metadata: {annotations: {checksum/settings: abc, keep: "1"}, labels: {app.kubernetes.io/managed-by: kustomize}}}}}`,
			want: `{kind: Deployment, metadata: {name: d}, spec: {template: {metadata: {annotations: {keep: "1"}}}}}`,
		},
		"an image's tag and digest are dropped, its registry port kept": {
			in:   `{kind: Deployment, metadata: {name: d}, spec: {template: {spec: {containers: [{image: "reg:5000/meshrelay/meshrelay:v1.2.3@sha256:abc"}]}}}}`,
			want: `{kind: Deployment, metadata: {name: d}, spec: {template: {spec: {containers: [{image: "reg:5000/meshrelay/meshrelay"}]}}}}`,
		},
		"a CRD's labels are dropped (helm installs crds/ untemplated)": {
			in:   `{kind: CustomResourceDefinition, metadata: {name: c, labels: {app.kubernetes.io/name: meshrelay}}}`,
			want: `{kind: CustomResourceDefinition, metadata: {name: c}}`,
		},
	} {
		t.Run(name, func(t *testing.T) {
			got, want := decodeOne(t, tc.in), decodeOne(t, tc.want)
			Normalise([]Object{got})
			if !reflect.DeepEqual(got, want) {
				t.Errorf("Normalise gave %v, want %v", got, want)
			}
		})
	}
}

func TestNormaliseDropsKustomizeHashesAndTheirReferences(t *testing.T) {
	objs, err := Decode(`
kind: ConfigMap
metadata: {name: meshrelay-settings-th59dfhkbm, namespace: gloo-mesh}
---
kind: Deployment
metadata: {name: relay-agent}
spec: {template: {spec: {containers: [{envFrom: [{configMapRef: {name: meshrelay-settings-th59dfhkbm}}]}]}}}
`)
	if err != nil {
		t.Fatal(err)
	}
	Normalise(objs)
	if got := Key(objs[0]); got != "ConfigMap gloo-mesh/meshrelay-settings" {
		t.Errorf("ConfigMap key %q, want its name without the hash", got)
	}
	ref := get(objs[1], "spec", "template", "spec", "containers").([]any)[0].(map[string]any)["envFrom"].([]any)[0]
	if name := ref.(map[string]any)["configMapRef"].(map[string]any)["name"]; name != "meshrelay-settings" {
		t.Errorf("configMapRef names %v, want meshrelay-settings", name)
	}
}

func TestDiff(t *testing.T) {
	overlay := `
apiVersion: apps/v1
kind: Deployment
metadata: {name: relay-agent, namespace: gloo-mesh}
spec: {replicas: 2, template: {spec: {containers: [{args: [--namespace=gloo-mesh]}]}}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: relay-agent, namespace: gloo-mesh}
`
	for name, tc := range map[string]struct {
		chart string
		want  []string
	}{
		"the same objects in another order differ in nothing": {
			chart: `
apiVersion: v1
kind: ServiceAccount
metadata: {namespace: gloo-mesh, name: relay-agent}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: relay-agent, namespace: gloo-mesh}
spec: {template: {spec: {containers: [{args: [--namespace=gloo-mesh]}]}}, replicas: 2}
`,
		},
		"a changed replica count and an added flag are named by their paths": {
			chart: `
apiVersion: apps/v1
kind: Deployment
metadata: {name: relay-agent, namespace: gloo-mesh}
spec: {replicas: 3, template: {spec: {containers: [{args: [--namespace=gloo-mesh, --disable-ca]}]}}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: relay-agent, namespace: gloo-mesh}
`,
			want: []string{
				"Deployment.apps gloo-mesh/relay-agent: spec.replicas: overlay 2, chart 3",
				"Deployment.apps gloo-mesh/relay-agent: spec.template.spec.containers[0].args: overlay [--namespace=gloo-mesh], chart [--namespace=gloo-mesh --disable-ca]",
			},
		},
		"an object only one side has is named": {
			chart: `
apiVersion: apps/v1
kind: Deployment
metadata: {name: relay-agent, namespace: gloo-mesh}
spec: {replicas: 2, template: {spec: {containers: [{args: [--namespace=gloo-mesh]}]}}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: extra}
`,
			want: []string{
				"ClusterRole.rbac.authorization.k8s.io extra: in the chart, not in the overlay",
				"ServiceAccount gloo-mesh/relay-agent: in the overlay, not in the chart",
			},
		},
	} {
		t.Run(name, func(t *testing.T) {
			a, err := Decode(overlay)
			if err != nil {
				t.Fatal(err)
			}
			b, err := Decode(tc.chart)
			if err != nil {
				t.Fatal(err)
			}
			if got := Diff(a, b); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Diff:\n got %q\nwant %q", got, tc.want)
			}
		})
	}
}

// tools returns helm and kubectl, failing the test with how to get them.
func tools(t *testing.T) (helm, kubectl string) {
	t.Helper()
	helm, err := Helm()
	if err != nil {
		t.Fatal(err)
	}
	kubectl, err = Kubectl()
	if err != nil {
		t.Fatal(err)
	}
	return helm, kubectl
}

// TestChartRendersWhatTheOverlaysDo is make verify's check as a test: the
// repository's chart and overlays agree, and the chart's copies are current.
func TestChartRendersWhatTheOverlaysDo(t *testing.T) {
	if testing.Short() {
		t.Skip("renders with helm and kubectl: run without -short (make test)")
	}
	helm, kubectl := tools(t)
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	diffs, err := Compare(ctx, helm, kubectl, root)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range diffs {
		t.Error(d)
	}
}

// TestCompareFindsDrift changes a copy of the repository's chart three ways
// an edit can drift from the overlays and expects each to be reported.
func TestCompareFindsDrift(t *testing.T) {
	if testing.Short() {
		t.Skip("renders with helm and kubectl: run without -short (make test)")
	}
	helm, kubectl := tools(t)
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	for _, dir := range []string{"charts", "manifests"} {
		if err := os.CopyFS(filepath.Join(tmp, dir), os.DirFS(filepath.Join(root, dir))); err != nil {
			t.Fatal(err)
		}
	}
	edit := func(path, old, new string) {
		t.Helper()
		p := filepath.Join(tmp, path)
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(data), old) {
			t.Fatalf("%s has no %q to change: update this test", path, old)
		}
		if err := os.WriteFile(p, []byte(strings.Replace(string(data), old, new, 1)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// The agent's replica default, an RBAC verb of relay-server, and a CRD copy.
	edit("charts/meshrelay/values.yaml", "glooAgent:\n  enabled: false\n  replicas: 2", "glooAgent:\n  enabled: false\n  replicas: 3")
	edit("charts/meshrelay/templates/server.yaml", `verbs: ["get", "update", "patch"]`, `verbs: ["get", "update", "patch", "delete"]`)
	edit("charts/meshrelay/crds/meshrelay.dev_roottrustpolicies.yaml", "kind: CustomResourceDefinition", "kind: CustomResourceDefinition\n# edited")
	// And the part-of label of the monitoring objects (six on each side).
	edit("charts/meshrelay/templates/monitoring.yaml", `"app.kubernetes.io/part-of" "meshrelay"`, `"app.kubernetes.io/part-of" "other"`)
	// And the renewal of relay-webhook's certificate from cert-manager.
	edit("charts/meshrelay/templates/webhook.yaml", "renewBefore: 720h", "renewBefore: 721h")

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	diffs, err := Compare(ctx, helm, kubectl, tmp)
	if err != nil {
		t.Fatal(err)
	}
	all := strings.Join(diffs, "\n")
	for _, want := range []string{
		"charts/meshrelay/crds/meshrelay.dev_roottrustpolicies.yaml differs from manifests/crds/meshrelay.dev_roottrustpolicies.yaml",
		"workload: Deployment.apps gloo-mesh/relay-agent: spec.replicas: overlay 2, chart 3",
		"management: Role.rbac.authorization.k8s.io gloo-mesh/relay-server: rules[7].verbs: overlay [get update patch], chart [get update patch delete]",
		"workload with monitoring: Deployment.apps gloo-mesh/relay-agent: spec.replicas: overlay 2, chart 3",
		"management with monitoring: PrometheusRule.monitoring.coreos.com gloo-mesh/meshrelay: metadata.labels.app.kubernetes.io/part-of: overlay meshrelay, chart other",
		"management with the webhook's certificate from cert-manager: Certificate.cert-manager.io meshrelay-system/relay-webhook: spec.renewBefore: overlay 720h, chart 721h",
		"workload with the webhook's certificate from cert-manager: Deployment.apps gloo-mesh/relay-agent: spec.replicas: overlay 2, chart 3",
	} {
		if !strings.Contains(all, want) {
			t.Errorf("Compare did not report %q; it reported:\n%s", want, all)
		}
	}
	// The copy; the replicas and the verb in the plain, the monitoring and
	// the cert-manager install each; the label on the six monitoring
	// objects of each; the renewal in both cert-manager installs.
	if want := 1 + 3 + 3 + 2*6 + 2; len(diffs) != want {
		t.Errorf("Compare reported %d differences, want %d:\n%s", len(diffs), want, all)
	}
}

func TestSwapWebhook(t *testing.T) {
	write := func(t *testing.T, kustomization string) (root, overlay string) {
		t.Helper()
		root, overlay = t.TempDir(), filepath.Join("manifests", "overlays", "management")
		if err := os.MkdirAll(filepath.Join(root, overlay), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, overlay, "kustomization.yaml"), []byte(kustomization), 0o644); err != nil {
			t.Fatal(err)
		}
		return root, overlay
	}

	t.Run("webhook/base is replaced by the variant and nothing else changes", func(t *testing.T) {
		root, overlay := write(t, "resources:\n  - ../../crds\n  - ../../webhook/base\n  - ../../webhook/base-extra\n")
		if err := swapWebhook(root, overlay, "cert-manager"); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(root, overlay, "kustomization.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		if want := "resources:\n  - ../../crds\n  - ../../webhook/cert-manager\n  - ../../webhook/base-extra\n"; string(got) != want {
			t.Errorf("kustomization after the swap:\n%s\nwant:\n%s", got, want)
		}
	})

	t.Run("an overlay without webhook/base fails, naming it", func(t *testing.T) {
		root, overlay := write(t, "resources:\n  - ../../webhook/cert-manager\n")
		err := swapWebhook(root, overlay, "cert-manager")
		if err == nil || !strings.Contains(err.Error(), overlay) || !strings.Contains(err.Error(), "0 times") {
			t.Errorf("swapWebhook: %v, want an error naming %s and that it lists webhook/base 0 times", err, overlay)
		}
	})
}
