package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/meshrelay/meshrelay/internal/testenv"
)

// krewPlugin is the part of krew's Plugin (v1alpha2) that installing
// relayctl depends on.
type krewPlugin struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Spec struct {
		Version          string `json:"version"`
		Homepage         string `json:"homepage"`
		ShortDescription string `json:"shortDescription"`
		Description      string `json:"description"`
		Caveats          string `json:"caveats"`
		Platforms        []struct {
			Selector struct {
				MatchLabels map[string]string `json:"matchLabels"`
			} `json:"selector"`
			URI    string `json:"uri"`
			SHA256 string `json:"sha256"`
			Files  []struct {
				From string `json:"from"`
				To   string `json:"to"`
			} `json:"files"`
			Bin string `json:"bin"`
		} `json:"platforms"`
	} `json:"spec"`
}

func TestKrewManifestInstallsKubectlRelayOnEveryPlatform(t *testing.T) {
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(root, "plugins", "relay.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var p krewPlugin
	if err := yaml.UnmarshalStrict(data, &p); err != nil {
		t.Fatalf("plugins/relay.yaml is not a krew Plugin: %v", err)
	}
	if p.APIVersion != "krew.googlecontainertools.github.com/v1alpha2" || p.Kind != "Plugin" || p.Metadata.Name != "relay" {
		t.Errorf("plugins/relay.yaml is %s %s %q, want krew.googlecontainertools.github.com/v1alpha2 Plugin relay", p.APIVersion, p.Kind, p.Metadata.Name)
	}
	if p.Spec.Version != "{{VERSION}}" || p.Spec.ShortDescription == "" || p.Spec.Homepage == "" {
		t.Errorf("spec: version %q (want the {{VERSION}} make release fills in), shortDescription %q, homepage %q", p.Spec.Version, p.Spec.ShortDescription, p.Spec.Homepage)
	}
	seen := map[string]bool{}
	for _, pl := range p.Spec.Platforms {
		os, arch := pl.Selector.MatchLabels["os"], pl.Selector.MatchLabels["arch"]
		key := os + "_" + arch
		seen[key] = true
		if !strings.Contains(pl.URI, "/{{VERSION}}/") || !strings.HasSuffix(pl.URI, "_{{VERSION}}_"+key+".tar.gz") {
			t.Errorf("%s: uri %q does not name the release's archive for %s", key, pl.URI, key)
		}
		if pl.SHA256 != "{{SHA256_"+key+"}}" {
			t.Errorf("%s: sha256 %q, want the placeholder {{SHA256_%s}}", key, pl.SHA256, key)
		}
		if pl.Bin != "kubectl-relay" || len(pl.Files) == 0 || pl.Files[0].From != "kubectl-relay" {
			t.Errorf("%s: bin %q, files %+v; want kubectl-relay installed", key, pl.Bin, pl.Files)
		}
	}
	for _, want := range []string{"linux_amd64", "linux_arm64", "darwin_amd64", "darwin_arm64"} {
		if !seen[want] {
			t.Errorf("plugins/relay.yaml has no platform %s", want)
		}
	}
	if len(p.Spec.Platforms) != 4 {
		t.Errorf("plugins/relay.yaml has %d platforms, want 4", len(p.Spec.Platforms))
	}
}
