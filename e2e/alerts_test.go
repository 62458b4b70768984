package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/meshrelay/meshrelay/internal/testenv"
)

// runbookBase is where each alert's runbook_url points, before the anchor.
const runbookBase = "https://github.com/meshrelay/meshrelay/blob/main/docs/operations.md#"

// TestMonitoringComponent builds the management and workload overlays with
// components/monitoring, as users add it, and checks that each
// ServiceMonitor finds the metrics port of its binary's pods there, that
// promtool check rules (every lint) passes on the PrometheusRule's groups,
// and that every alert has a severity, a summary, a description and a
// runbook_url whose section exists in docs/operations.md.
func TestMonitoringComponent(t *testing.T) {
	if testing.Short() {
		t.Skip("needs kubectl and promtool, which make test-unit does not build: run make test")
	}
	bin := promtool(t)
	kubectl := kubectlBinary(t)
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()

	for _, tc := range []struct {
		overlay string
		// scrapes maps each ServiceMonitor that has pods to scrape in the
		// overlay to the Service it must find them through.
		scrapes map[string]string
	}{
		{"management", map[string]string{"relay-server": "gloo-mesh-mgmt-server", "relay-webhook": "relay-webhook-metrics"}},
		{"workload", map[string]string{"relay-agent": "relay-agent-metrics", "relay-webhook": "relay-webhook-metrics"}},
	} {
		t.Run(tc.overlay+" with the component: each ServiceMonitor finds port 9091 of its binary's pods", func(t *testing.T) {
			objs := buildWithMonitoring(ctx, t, kubectl, root, tc.overlay)
			monitors := 0
			for _, sm := range objs {
				if sm.GetKind() != "ServiceMonitor" {
					continue
				}
				monitors++
				want, ok := tc.scrapes[sm.GetName()]
				if !ok {
					continue
				}
				if got := scrapedServices(t, objs, sm); !slices.Contains(got, want) {
					t.Errorf("ServiceMonitor %s/%s scrapes %v, want Service %s", sm.GetNamespace(), sm.GetName(), got, want)
				}
			}
			if monitors != 3 {
				t.Errorf("%d ServiceMonitors, want 3 (relay-server, relay-agent, relay-webhook)", monitors)
			}
		})
	}

	t.Run("the rules pass promtool check rules with every lint, and each alert has a severity, a summary, a description and its runbook", func(t *testing.T) {
		dir := t.TempDir()
		groups := writeRules(t, buildWithMonitoring(ctx, t, kubectl, root, "workload"), dir)
		runPromtool(ctx, t, bin, dir, "check", "rules", "--lint=all", "--lint-fatal", "rules.yaml")
		ops, err := os.ReadFile(filepath.Join(root, "docs", "operations.md"))
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		for _, g := range groups {
			rules, _, _ := unstructured.NestedSlice(g.(map[string]any), "rules")
			for _, r := range rules {
				rule := r.(map[string]any)
				name, _ := rule["alert"].(string)
				if name == "" {
					continue
				}
				seen[name] = true
				severity, _, _ := unstructured.NestedString(rule, "labels", "severity")
				if severity != "warning" && severity != "critical" {
					t.Errorf("%s: severity %q, want warning or critical", name, severity)
				}
				ann, _, _ := unstructured.NestedStringMap(rule, "annotations")
				for _, key := range []string{"summary", "description"} {
					if ann[key] == "" {
						t.Errorf("%s: no %s annotation", name, key)
					}
				}
				if want := runbookBase + strings.ToLower(name); ann["runbook_url"] != want {
					t.Errorf("%s: runbook_url %q, want %q", name, ann["runbook_url"], want)
				}
				if !regexp.MustCompile(`(?m)^### ` + name + `$`).Match(ops) {
					t.Errorf("%s: docs/operations.md has no section \"### %s\", where its runbook_url points", name, name)
				}
			}
		}
		for _, name := range alertNames {
			if !seen[name] {
				t.Errorf("PrometheusRule meshrelay has no alert %s", name)
			}
		}
		if len(seen) != len(alertNames) {
			t.Errorf("alerts %v, want %v: the alert tests expect each of theirs by name", seen, alertNames)
		}
	})
}

// scrapedServices returns the Services in sm's namespace that sm selects
// and that serve its endpoint port from a named container port of a pod
// template there with the same number.
func scrapedServices(t *testing.T, objs []*unstructured.Unstructured, sm *unstructured.Unstructured) []string {
	t.Helper()
	selector, _, _ := unstructured.NestedStringMap(sm.Object, "spec", "selector", "matchLabels")
	endpoints, _, _ := unstructured.NestedSlice(sm.Object, "spec", "endpoints")
	if len(selector) == 0 || len(endpoints) != 1 {
		t.Fatalf("ServiceMonitor %s: selector %v, endpoints %v: want matchLabels and one endpoint", sm.GetName(), selector, endpoints)
	}
	port, _, _ := unstructured.NestedString(endpoints[0].(map[string]any), "port")
	var out []string
	for _, svc := range objs {
		if svc.GetKind() != "Service" || svc.GetNamespace() != sm.GetNamespace() || !hasLabels(svc.GetLabels(), selector) {
			continue
		}
		podSelector, _, _ := unstructured.NestedStringMap(svc.Object, "spec", "selector")
		ports, _, _ := unstructured.NestedSlice(svc.Object, "spec", "ports")
		for _, p := range ports {
			p := p.(map[string]any)
			if p["name"] != port {
				continue
			}
			if containerPort(objs, svc.GetNamespace(), podSelector, fmt.Sprint(p["targetPort"])) == fmt.Sprint(p["port"]) {
				out = append(out, svc.GetName())
			}
		}
	}
	return out
}

// containerPort returns the number of the container port called name in
// the pod template of a Deployment in namespace whose pods podSelector
// selects, or "".
func containerPort(objs []*unstructured.Unstructured, namespace string, podSelector map[string]string, name string) string {
	for _, d := range objs {
		if d.GetKind() != "Deployment" || d.GetNamespace() != namespace {
			continue
		}
		labels, _, _ := unstructured.NestedStringMap(d.Object, "spec", "template", "metadata", "labels")
		if len(podSelector) == 0 || !hasLabels(labels, podSelector) {
			continue
		}
		containers, _, _ := unstructured.NestedSlice(d.Object, "spec", "template", "spec", "containers")
		for _, c := range containers {
			ports, _, _ := unstructured.NestedSlice(c.(map[string]any), "ports")
			for _, p := range ports {
				if p := p.(map[string]any); p["name"] == name {
					return fmt.Sprint(p["containerPort"])
				}
			}
		}
	}
	return ""
}

func hasLabels(labels, want map[string]string) bool {
	for k, v := range want {
		if labels[k] != v {
			return false
		}
	}
	return true
}
