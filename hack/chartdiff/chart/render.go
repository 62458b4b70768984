package chart

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// ReleaseName is the release name the comparison renders the chart under:
// the app.kubernetes.io/instance label components/labels gives.
const ReleaseName = "meshrelay"

// Install is one kind of install: a kustomize overlay and the chart values
// that make the same objects.
type Install struct {
	// Name says which install it is ("management", "workload with
	// monitoring").
	Name string
	// Overlay is the overlay's folder under the repository.
	Overlay string
	// Webhook, when set, is the relay-webhook variant (a folder under
	// manifests/webhook) the overlay takes in place of webhook/base, as
	// the cert-manager and vault overlays take webhook/cert-manager.
	Webhook string
	// Set lists helm --set values.
	Set []string
	// CRDs says whether the overlay installs the CRDs; the README has
	// workload installs pass --skip-crds, which leaves them out.
	CRDs bool
	// Components are kustomize components (under manifests/components)
	// added to the overlay, as a user's own kustomization would.
	Components []string
}

// Installs returns the management and workload installs. The workload
// install's cluster name, server address and authority come from the
// overlay's settings.env, the file a kustomize user edits, so both
// renderings configure the same cluster.
func Installs(root string) ([]Install, error) {
	settings, err := readEnv(filepath.Join(root, "manifests", "overlays", "workload", "settings.env"))
	if err != nil {
		return nil, err
	}
	set := []string{"glooMgmtServer.enabled=false", "glooAgent.enabled=true"}
	for key, value := range map[string]string{
		"MESHRELAY_CLUSTER":        "cluster",
		"MESHRELAY_SERVER_ADDRESS": "glooAgent.relay.serverAddress",
		"MESHRELAY_AUTHORITY":      "glooAgent.relay.authority",
	} {
		v, ok := settings[key]
		if !ok {
			return nil, fmt.Errorf("manifests/overlays/workload/settings.env has no %s: add it, the workload overlay needs it", key)
		}
		set = append(set, value+"="+v)
	}
	monitoring := []string{"monitoring.enabled=true"}
	certManager := []string{"webhook.certManager.enabled=true"}
	return []Install{
		{Name: "management", Overlay: "manifests/overlays/management", CRDs: true},
		{Name: "workload", Overlay: "manifests/overlays/workload", Set: set},
		{Name: "management with monitoring", Overlay: "manifests/overlays/management", CRDs: true,
			Set: monitoring, Components: []string{"monitoring"}},
		{Name: "workload with monitoring", Overlay: "manifests/overlays/workload",
			Set: append(slices.Clone(set), monitoring...), Components: []string{"monitoring"}},
		{Name: "management with the webhook's certificate from cert-manager", Overlay: "manifests/overlays/management", CRDs: true,
			Set: certManager, Webhook: "cert-manager"},
		{Name: "workload with the webhook's certificate from cert-manager", Overlay: "manifests/overlays/workload",
			Set: append(slices.Clone(set), certManager...), Webhook: "cert-manager"},
	}, nil
}

func readEnv(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("failed to read settings: %w", err)
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("failed to read %s: line %q is not KEY=VALUE", path, line)
		}
		out[k] = v
	}
	return out, sc.Err()
}

// Template renders the chart with helm template in release namespace
// default (so the chart renders both namespaces, as the overlays do), with
// the given --set values and values files, and the CRDs when crds is true.
func Template(ctx context.Context, helm, root string, crds bool, set, valuesFiles []string) (string, error) {
	args := []string{"template", ReleaseName, filepath.Join(root, "charts", "meshrelay"), "--namespace", "default"}
	if crds {
		args = append(args, "--include-crds")
	}
	for _, s := range set {
		args = append(args, "--set", s)
	}
	for _, f := range valuesFiles {
		args = append(args, "--values", f)
	}
	return run(ctx, helm, args...)
}

// Kustomize renders an install's overlay with kubectl kustomize: from a
// copy of manifests/ whose overlay takes in.Webhook in place of
// webhook/base when that is set, and with in.Components (names under
// manifests/components) added by a kustomization of its own.
func Kustomize(ctx context.Context, kubectl, root string, in Install) (string, error) {
	dir, err := os.MkdirTemp("", "chartdiff-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(dir)
	if in.Webhook != "" {
		tree := filepath.Join(dir, "tree")
		if err := os.CopyFS(filepath.Join(tree, "manifests"), os.DirFS(filepath.Join(root, "manifests"))); err != nil {
			return "", fmt.Errorf("failed to copy manifests: %w", err)
		}
		if err := swapWebhook(tree, in.Overlay, in.Webhook); err != nil {
			return "", err
		}
		root = tree
	}
	if len(in.Components) == 0 {
		return run(ctx, kubectl, "kustomize", filepath.Join(root, in.Overlay))
	}
	rel := func(path string) (string, error) { return filepath.Rel(dir, filepath.Join(root, path)) }
	base, err := rel(in.Overlay)
	if err != nil {
		return "", err
	}
	k := fmt.Sprintf("resources:\n  - %s\ncomponents:\n", base)
	for _, c := range in.Components {
		p, err := rel(filepath.Join("manifests", "components", c))
		if err != nil {
			return "", err
		}
		k += "  - " + p + "\n"
	}
	if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(k), 0o644); err != nil {
		return "", err
	}
	return run(ctx, kubectl, "kustomize", dir)
}

// swapWebhook rewrites the kustomization of overlay, a folder under the
// repository root, so that it lists manifests/webhook/<variant> where it
// listed manifests/webhook/base. root is a copy of the repository.
func swapWebhook(root, overlay, variant string) error {
	dir := filepath.Join(root, overlay)
	path := filepath.Join(dir, "kustomization.yaml")
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("failed to read overlay: %w", err)
	}
	webhooks := filepath.Join(root, "manifests", "webhook")
	base, err := filepath.Rel(dir, filepath.Join(webhooks, "base"))
	if err != nil {
		return err
	}
	swapped, err := filepath.Rel(dir, filepath.Join(webhooks, variant))
	if err != nil {
		return err
	}
	lines := strings.Split(string(data), "\n")
	found := 0
	for i, line := range lines {
		if strings.TrimSpace(line) == "- "+base {
			lines[i] = strings.Replace(line, base, swapped, 1)
			found++
		}
	}
	if found != 1 {
		return fmt.Errorf("failed to put webhook/%s in place of webhook/base: %s lists %s %d times, want once", variant, overlay, base, found)
	}
	return os.WriteFile(path, []byte(strings.Join(lines, "\n")), 0o644)
}
