// Package release_test checks make release (hack/release.sh): the files it
// writes, the images and labels pinned in them, its checksums, and what it
// refuses.
package release_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	"sigs.k8s.io/yaml"

	"github.com/meshrelay/meshrelay/internal/testenv"
)

const image = "ghcr.io/meshrelay/meshrelay"

// digest is a well-formed image digest for the tests that pin one.
const digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// manifests are the files a release renders from manifests/, each with
// the kinds it must hold at least one of.
var manifests = map[string][]string{
	"meshrelay-crds.yaml":                    {"CustomResourceDefinition"},
	"meshrelay-management.yaml":              {"CustomResourceDefinition", "Deployment"},
	"meshrelay-workload.yaml":                {"Deployment", "ConfigMap"},
	"meshrelay-cert-manager-management.yaml": {"Deployment", "Certificate"},
	"meshrelay-cert-manager-workload.yaml":   {"Deployment", "Certificate"},
	"meshrelay-vault-management.yaml":        {"Deployment", "Issuer"},
	"meshrelay-vault-workload.yaml":          {"Deployment", "Issuer"},
}

// tools are the binaries a release runs.
type tools struct {
	kubectl, buf, helm string
}

// findTools returns the tools make test provides, failing the test with how
// to get each one that is missing; it skips under -short, which builds none.
func findTools(t *testing.T) (root string, tl tools) {
	t.Helper()
	if testing.Short() {
		t.Skip("needs kubectl, buf and helm, which make test-unit does not build: run make test")
	}
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	assets, err := testenv.AssetsDir()
	if err != nil {
		t.Fatal(err)
	}
	if err := testenv.CheckAssets(assets, "kubectl"); err != nil {
		t.Fatal(err)
	}
	tl.kubectl = filepath.Join(assets, "kubectl")
	for _, tool := range []struct {
		env  string
		path *string
	}{{"BUF", &tl.buf}, {"HELM", &tl.helm}} {
		name := strings.ToLower(tool.env)
		fix := fmt.Sprintf("run make test, or make %s and set %s to it", filepath.Join(root, "bin", "tools", name), tool.env)
		*tool.path = os.Getenv(tool.env)
		if *tool.path == "" {
			t.Fatalf("$%s is not set: make release runs %s: %s", tool.env, name, fix)
		}
		if fi, err := os.Stat(*tool.path); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			t.Fatalf("$%s=%s is not an executable (%v): %s", tool.env, *tool.path, err, fix)
		}
	}
	return root, tl
}

// run runs name with args in dir and extra environment, and returns its
// exit status and combined output; it fails the test when it cannot start.
func run(t *testing.T, dir string, env []string, name string, args ...string) (int, string) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0, string(out)
	case errors.As(err, &exit):
		return exit.ExitCode(), string(out)
	default:
		t.Fatalf("failed to run %s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		return 0, ""
	}
}

// copyReleases copies the repository's relay API release images into a new
// folder, so that a release under test writes its baseline there.
func copyReleases(t *testing.T, root string) string {
	t.Helper()
	dir := t.TempDir()
	images, err := filepath.Glob(filepath.Join(root, "relay", "api", "releases", "*.binpb"))
	if err != nil || len(images) == 0 {
		t.Fatalf("no release image in relay/api/releases (%v): restore them from git", err)
	}
	for _, src := range images {
		data, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(src)), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// objects decodes a YAML stream into objects.
func objects(t *testing.T, what string, data []byte) []*unstructured.Unstructured {
	t.Helper()
	var objs []*unstructured.Unstructured
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	for {
		u := &unstructured.Unstructured{}
		err := dec.Decode(&u.Object)
		if errors.Is(err, io.EOF) {
			return objs
		}
		if err != nil {
			t.Fatalf("%s: not a YAML stream of objects: %v", what, err)
		}
		if len(u.Object) > 0 {
			objs = append(objs, u)
		}
	}
}

// images returns every value of a field named image anywhere in v.
func images(v any) []string {
	var out []string
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			if s, ok := e.(string); ok && k == "image" {
				out = append(out, s)
			} else {
				out = append(out, images(e)...)
			}
		}
	case []any:
		for _, e := range v {
			out = append(out, images(e)...)
		}
	}
	return out
}

// checkPinned fails t unless the YAML stream data holds objects of each of
// kinds, every image in it is want, at least one is, nothing says latest,
// and every object (and pod template) is labelled with version.
func checkPinned(t *testing.T, what string, data []byte, kinds []string, want, version string) {
	t.Helper()
	if bytes.Contains(data, []byte(":latest")) {
		t.Errorf("%s still refers to an image :latest", what)
	}
	objs := objects(t, what, data)
	var seen []string
	pinned := 0
	for _, o := range objs {
		seen = append(seen, o.GetKind())
		name := fmt.Sprintf("%s: %s %s", what, o.GetKind(), o.GetName())
		for _, img := range images(o.Object) {
			if img != want {
				t.Errorf("%s: image %q, want %q", name, img, want)
			}
			pinned++
		}
		if got := o.GetLabels()["app.kubernetes.io/version"]; got != version {
			t.Errorf("%s: label app.kubernetes.io/version=%q, want %q", name, got, version)
		}
		if tmpl, ok, _ := unstructured.NestedStringMap(o.Object, "spec", "template", "metadata", "labels"); ok && tmpl["app.kubernetes.io/version"] != version {
			t.Errorf("%s: pod template label app.kubernetes.io/version=%q, want %q", name, tmpl["app.kubernetes.io/version"], version)
		}
	}
	for _, k := range kinds {
		if !slices.Contains(seen, k) {
			t.Errorf("%s holds no %s (kinds: %v)", what, k, seen)
		}
	}
	if slices.Contains(kinds, "Deployment") && pinned == 0 {
		t.Errorf("%s names no image", what)
	}
}

// checkSums fails t unless dist/SHA256SUMS lists every other file of dist
// once with its SHA-256.
func checkSums(t *testing.T, dist string) {
	t.Helper()
	sums, err := os.ReadFile(filepath.Join(dist, "SHA256SUMS"))
	if err != nil {
		t.Fatalf("no SHA256SUMS: %v", err)
	}
	listed := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(string(sums)), "\n") {
		sum, name, ok := strings.Cut(line, "  ")
		if !ok {
			t.Errorf("SHA256SUMS line %q is not <sha256>  <file>", line)
			continue
		}
		if listed[name] {
			t.Errorf("SHA256SUMS lists %s twice", name)
		}
		listed[name] = true
		data, err := os.ReadFile(filepath.Join(dist, name))
		if err != nil {
			t.Errorf("SHA256SUMS lists %s: %v", name, err)
			continue
		}
		if got := sha256.Sum256(data); hex.EncodeToString(got[:]) != sum {
			t.Errorf("SHA256SUMS: %s has sha256 %x, listed %s", name, got, sum)
		}
	}
	entries, err := os.ReadDir(dist)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() != "SHA256SUMS" && !listed[e.Name()] {
			t.Errorf("SHA256SUMS does not list %s", e.Name())
		}
	}
}

// checkChart renders the packaged chart with helm for a management and a
// workload cluster and checks the images and labels pinned in each.
func checkChart(t *testing.T, helm, tgz, want, version string) {
	t.Helper()
	code, out := run(t, "", nil, helm, "show", "chart", tgz)
	if code != 0 {
		t.Fatalf("helm show chart %s exited %d:\n%s", tgz, code, out)
	}
	if !strings.Contains(out, "\nversion: "+strings.TrimPrefix(version, "v")+"\n") {
		t.Errorf("packaged chart is not version %s:\n%s", strings.TrimPrefix(version, "v"), out)
	}
	for _, install := range []struct {
		name  string
		set   string
		kinds []string
	}{
		{"management", "", []string{"Deployment"}},
		{"workload", "glooMgmtServer.enabled=false,glooAgent.enabled=true,cluster=cluster-1", []string{"Deployment"}},
	} {
		args := []string{"template", "meshrelay", tgz, "--namespace", "gloo-mesh"}
		if install.set != "" {
			args = append(args, "--set", install.set)
		}
		code, out := run(t, "", nil, helm, args...)
		if code != 0 {
			t.Fatalf("helm %s exited %d:\n%s", strings.Join(args, " "), code, out)
		}
		checkPinned(t, "chart ("+install.name+")", []byte(out), install.kinds, want, version)
	}
}

// TestMakeReleaseWritesPinnedManifestsChartAndChecksums runs make release
// for a pre-release into a new folder, as a person would, and checks every
// file it writes: each overlay's manifests with every image at the version
// and nothing at latest, the chart that renders the same images, the
// kubectl-relay archive, checksums that verify, and no relay API baseline
// (pre-releases write none). Cross-compiling kubectl-relay for every
// platform of plugins/relay.yaml takes minutes: it is built for this
// platform only, so the krew manifest is not written; with a manifest of
// this platform alone (KREW_MANIFEST), it is, filled in. Then again with
// RELEASE_DIGEST: every image is pinned by tag and digest.
func TestMakeReleaseWritesPinnedManifestsChartAndChecksums(t *testing.T) {
	root, tl := findTools(t)
	const version = "v0.0.0-test"
	platform := runtime.GOOS + "/" + runtime.GOARCH
	hostManifest := krewManifestOf(t, root, runtime.GOOS, runtime.GOARCH)
	for _, tc := range []struct {
		name   string
		digest string
		want   string
		// krew is the krew manifest template; wantKrew whether it is
		// written.
		krew     string
		wantKrew bool
	}{
		{"by tag", "", image + ":" + version, filepath.Join(root, "plugins", "relay.yaml"), false},
		{"by tag and digest", digest, image + ":" + version + "@" + digest, hostManifest, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dist := filepath.Join(t.TempDir(), "dist")
			releases := copyReleases(t, root)
			code, out := run(t, root, nil, "make", "--no-print-directory", "release", "VERSION="+version,
				"DIST="+dist, "API_RELEASES="+releases, "ALLOW_DIRTY=1", "RELEASE_DIGEST="+tc.digest,
				"RELEASE_PLATFORMS="+platform, "KREW_MANIFEST="+tc.krew)
			if code != 0 {
				t.Fatalf("make release exited %d:\n%s", code, out)
			}
			t.Logf("make release:\n%s", out)

			entries, err := os.ReadDir(dist)
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, e := range entries {
				names = append(names, e.Name())
			}
			for name, kinds := range manifests {
				data, err := os.ReadFile(filepath.Join(dist, name))
				if err != nil {
					t.Errorf("make release wrote no %s (wrote %v)", name, names)
					continue
				}
				checkPinned(t, name, data, kinds, tc.want, version)
			}
			tgz := filepath.Join(dist, "meshrelay-"+strings.TrimPrefix(version, "v")+".tgz")
			if _, err := os.Stat(tgz); err != nil {
				t.Errorf("make release packaged no chart: %v (wrote %v)", err, names)
			} else {
				checkChart(t, tl.helm, tgz, tc.want, version)
			}
			archive := filepath.Join(dist, fmt.Sprintf("kubectl-relay_%s_%s_%s.tar.gz", version, runtime.GOOS, runtime.GOARCH))
			checkPluginArchive(t, archive, version)
			written := filepath.Join(dist, "relay.yaml")
			if tc.wantKrew {
				checkKrewManifest(t, written, archive, version)
			} else if _, err := os.Stat(written); err == nil || !strings.Contains(out, "the krew manifest is not written") {
				t.Errorf("make release for %s alone wrote the krew manifest (%v) or did not say why not:\n%s", platform, err, out)
			}
			want := len(manifests) + 3 // the chart, the kubectl-relay archive and SHA256SUMS
			if tc.wantKrew {
				want++
			}
			if len(names) != want {
				t.Errorf("make release wrote %d files, want %d: %v", len(names), want, names)
			}
			checkSums(t, dist)

			baselines, err := filepath.Glob(filepath.Join(releases, version+"*"))
			if err != nil || len(baselines) > 0 {
				t.Errorf("a pre-release wrote relay API baselines %v (%v); only final releases do", baselines, err)
			}
			if !strings.Contains(out, "git tag -a "+version) {
				t.Errorf("make release does not print the git tag command to run:\n%s", out)
			}
		})
	}
}

// TestMakeReleaseRefusesBadInput runs make release with versions that are
// not release versions and with a malformed digest: each is refused with a
// message naming the fix, and nothing is written.
func TestMakeReleaseRefusesBadInput(t *testing.T) {
	root, _ := findTools(t)
	for _, tc := range []struct {
		name    string
		args    []string
		wantOut string
	}{
		{"no version", []string{"VERSION="}, "no VERSION: make release VERSION=vX.Y.Z"},
		{"a version without its v", []string{"VERSION=1.2.3"}, "VERSION=1.2.3 is not a release version: use semver with a leading v"},
		{"a version of two numbers", []string{"VERSION=v1.2"}, "VERSION=v1.2 is not a release version"},
		{"a version with a leading zero", []string{"VERSION=v01.2.3"}, "VERSION=v01.2.3 is not a release version"},
		{"a version with build metadata, which no image tag can hold", []string{"VERSION=v1.2.3+build.5"}, "VERSION=v1.2.3+build.5 is not a release version"},
		{"a name", []string{"VERSION=latest"}, "VERSION=latest is not a release version"},
		{"a malformed digest", []string{"VERSION=v1.2.3", "RELEASE_DIGEST=sha256:abc"}, "RELEASE_DIGEST=sha256:abc is not an image digest"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dist := filepath.Join(t.TempDir(), "dist")
			args := append([]string{"--no-print-directory", "release", "DIST=" + dist, "ALLOW_DIRTY=1",
				"API_RELEASES=" + copyReleases(t, root)}, tc.args...)
			code, out := run(t, root, nil, "make", args...)
			if code == 0 {
				t.Fatalf("make release %v succeeded, want it refused:\n%s", tc.args, out)
			}
			if !strings.Contains(out, tc.wantOut) {
				t.Errorf("make release %v: output lacks %q:\n%s", tc.args, tc.wantOut, out)
			}
			if _, err := os.Stat(dist); err == nil {
				t.Errorf("make release %v was refused but created %s", tc.args, dist)
			}
		})
	}
}

// copyTree copies the files of root under each of paths into dst.
func copyTree(t *testing.T, root, dst string, paths ...string) {
	t.Helper()
	for _, p := range paths {
		err := filepath.WalkDir(filepath.Join(root, p), func(src string, d os.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, err := filepath.Rel(root, src)
			if err != nil {
				return err
			}
			if d.IsDir() {
				return os.MkdirAll(filepath.Join(dst, rel), 0o755)
			}
			if err := os.MkdirAll(filepath.Dir(filepath.Join(dst, rel)), 0o755); err != nil {
				return err
			}
			info, err := d.Info()
			if err != nil {
				return err
			}
			data, err := os.ReadFile(src)
			if err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(dst, rel), data, info.Mode().Perm())
		})
		if err != nil {
			t.Fatalf("failed to copy %s: %v", p, err)
		}
	}
}

// TestReleaseFromACommit cuts releases in a git repository of its own,
// made of this tree's release script, manifests, chart and relay API: a
// final release writes the relay API baseline and asks for it to be
// committed; a tree with uncommitted changes, a version tagged at another
// commit and a relay API that broke compatibility are each refused, and a
// refused release leaves dist/ as it was.
func TestReleaseFromACommit(t *testing.T) {
	root, tl := findTools(t)
	repo := t.TempDir()
	paths := []string{"hack/release.sh", "hack/api-breaking.sh", "buf.yaml", "manifests", "relay/api/v1/relay.proto", "relay/api/releases"}
	if _, err := os.Stat(filepath.Join(root, "charts", "meshrelay")); err == nil {
		paths = append(paths, "charts/meshrelay")
	}
	copyTree(t, root, repo, paths...)
	git := func(args ...string) string {
		t.Helper()
		code, out := run(t, repo, nil, "git", append([]string{"-c", "user.name=release test", "-c", "user.email=release@test.invalid", "-c", "commit.gpgsign=false", "-c", "tag.gpgsign=false"}, args...)...)
		if code != 0 {
			t.Fatalf("git %s exited %d:\n%s", strings.Join(args, " "), code, out)
		}
		return strings.TrimSpace(out)
	}
	git("init", "-q", "-b", "main")
	git("add", ".")
	git("commit", "-q", "-m", "a tree to release")

	dist := filepath.Join(t.TempDir(), "dist")
	release := func(version string) (int, string) {
		t.Helper()
		return run(t, repo, []string{"KUBECTL=" + tl.kubectl, "BUF=" + tl.buf, "HELM=" + tl.helm, "DIST=" + dist,
			"ALLOW_DIRTY=", "RELEASE_DIGEST=", "API_RELEASES=", "KREW_MANIFEST=", "RELEASE_PLATFORMS="}, filepath.Join(repo, "hack", "release.sh"), version)
	}
	sums := func() string {
		t.Helper()
		data, err := os.ReadFile(filepath.Join(dist, "SHA256SUMS"))
		if err != nil {
			t.Fatalf("no SHA256SUMS in dist: %v", err)
		}
		return string(data)
	}
	baseline := filepath.Join("relay", "api", "releases", "v0.2.0.binpb")

	code, out := release("v0.2.0")
	if code != 0 {
		t.Fatalf("release v0.2.0 from a clean commit exited %d:\n%s", code, out)
	}
	if _, err := os.Stat(filepath.Join(repo, baseline)); err != nil {
		t.Fatalf("a final release wrote no relay API baseline %s: %v\n%s", baseline, err, out)
	}
	if !strings.Contains(out, "git add "+baseline) {
		t.Errorf("release does not ask for the new baseline to be committed:\n%s", out)
	}
	checkSums(t, dist)
	before := sums()

	code, out = release("v0.2.0")
	if code == 0 || !strings.Contains(out, "the tree has uncommitted changes") || !strings.Contains(out, baseline) {
		t.Errorf("release from a tree with the uncommitted %s exited %d, want refused naming it:\n%s", baseline, code, out)
	}

	git("add", baseline)
	git("commit", "-q", "-m", "relay API: the v0.2.0 baseline")
	head := git("rev-parse", "HEAD")
	code, out = release("v0.2.0")
	if code != 0 {
		t.Fatalf("release v0.2.0 after committing its baseline exited %d:\n%s", code, out)
	}
	if !strings.Contains(out, "is up to date") || !strings.Contains(out, "git tag -a v0.2.0 -m \"meshrelay v0.2.0\" "+head) {
		t.Errorf("release with its baseline committed does not find it up to date and print the tag for %s:\n%s", head, out)
	}
	if after := sums(); after != before {
		t.Errorf("the same release from the baseline's commit wrote other files:\nbefore:\n%s\nafter:\n%s", before, after)
	}

	git("tag", "-a", "v0.2.0", "-m", "meshrelay v0.2.0")
	git("commit", "-q", "--allow-empty", "-m", "after the release")
	code, out = release("v0.2.0")
	if code == 0 || !strings.Contains(out, "v0.2.0 is already tagged at "+head) {
		t.Errorf("release of v0.2.0, tagged at an earlier commit, exited %d, want refused naming the tagged commit:\n%s", code, out)
	}

	proto := filepath.Join(repo, "relay", "api", "v1", "relay.proto")
	data, err := os.ReadFile(proto)
	if err != nil {
		t.Fatal(err)
	}
	const field = "  string token = 2;\n"
	if strings.Count(string(data), field) != 1 {
		t.Fatalf("relay.proto holds %q not exactly once: update this test to the proto", field)
	}
	if err := os.WriteFile(proto, []byte(strings.Replace(string(data), field, "", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	git("commit", "-q", "-am", "drop BootstrapRequest.token")
	code, out = release("v0.3.0")
	if code == 0 || !strings.Contains(out, "not compatible with the last release") || !strings.Contains(out, `"token"`) {
		t.Errorf("release of a relay API without BootstrapRequest.token exited %d, want refused naming the field:\n%s", code, out)
	}
	if _, err := os.Stat(filepath.Join(repo, "relay", "api", "releases", "v0.3.0.binpb")); err == nil {
		t.Errorf("a refused release wrote its relay API baseline")
	}
	if after := sums(); after != before {
		t.Errorf("refused releases changed dist:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// krewManifestOf writes a copy of plugins/relay.yaml that names only the
// platform goos/goarch, and returns its path.
func krewManifestOf(t *testing.T, root, goos, goarch string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(root, "plugins", "relay.yaml"))
	if err != nil {
		t.Fatalf("no krew manifest: %v", err)
	}
	var m map[string]any
	if err := yaml.Unmarshal(data, &m); err != nil {
		t.Fatalf("plugins/relay.yaml: %v", err)
	}
	platforms, _, _ := unstructured.NestedSlice(m, "spec", "platforms")
	var kept []any
	for _, p := range platforms {
		labels, _, _ := unstructured.NestedStringMap(p.(map[string]any), "selector", "matchLabels")
		if labels["os"] == goos && labels["arch"] == goarch {
			kept = append(kept, p)
		}
	}
	if len(kept) != 1 {
		t.Fatalf("plugins/relay.yaml names %s/%s %d times, want once", goos, goarch, len(kept))
	}
	if err := unstructured.SetNestedSlice(m, kept, "spec", "platforms"); err != nil {
		t.Fatal(err)
	}
	out, err := yaml.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "relay.yaml")
	if err := os.WriteFile(path, out, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// checkPluginArchive fails t unless archive holds exactly kubectl-relay
// and LICENSE, and that kubectl-relay reports version.
func checkPluginArchive(t *testing.T, archive, version string) {
	t.Helper()
	f, err := os.Open(archive)
	if err != nil {
		t.Errorf("no kubectl-relay archive: %v", err)
		return
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("%s: %v", archive, err)
	}
	tr := tar.NewReader(gz)
	var names []string
	dir := t.TempDir()
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: %v", archive, err)
		}
		names = append(names, h.Name)
		if h.Name == "kubectl-relay" {
			data, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, h.Name), data, 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	slices.Sort(names)
	if !slices.Equal(names, []string{"LICENSE", "kubectl-relay"}) {
		t.Errorf("%s holds %v, want kubectl-relay and LICENSE", filepath.Base(archive), names)
	}
	code, out := run(t, dir, nil, filepath.Join(dir, "kubectl-relay"), "version")
	if code != 0 || !strings.Contains(out, version) {
		t.Errorf("kubectl-relay version exited %d, want it to report %s:\n%s", code, version, out)
	}
}

// checkKrewManifest fails t unless the krew manifest at path names version
// and archive's download address and SHA-256, with no placeholder left.
func checkKrewManifest(t *testing.T, path, archive, version string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Errorf("make release wrote no krew manifest: %v", err)
		return
	}
	if bytes.Contains(data, []byte("{{")) {
		t.Errorf("the krew manifest keeps placeholders:\n%s", data)
	}
	var m map[string]any
	if err := yaml.Unmarshal(data, &m); err != nil {
		t.Fatalf("the krew manifest: %v", err)
	}
	if got, _, _ := unstructured.NestedString(m, "spec", "version"); got != version {
		t.Errorf("the krew manifest's spec.version is %q, want %q", got, version)
	}
	archived, err := os.ReadFile(archive)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(archived)
	platforms, _, _ := unstructured.NestedSlice(m, "spec", "platforms")
	if len(platforms) != 1 {
		t.Fatalf("the krew manifest names %d platforms, want 1", len(platforms))
	}
	p := platforms[0].(map[string]any)
	if got := p["sha256"]; got != hex.EncodeToString(sum[:]) {
		t.Errorf("the krew manifest's sha256 is %v, want the archive's %x", got, sum)
	}
	wantURI := "https://github.com/meshrelay/meshrelay/releases/download/" + version + "/" + filepath.Base(archive)
	if got := p["uri"]; got != wantURI {
		t.Errorf("the krew manifest's uri is %v, want %s", got, wantURI)
	}
}
