// Package envtestassets_test checks hack/envtest-assets.sh, which provides
// the local clusters' binaries: with every binary present it does nothing;
// otherwise it takes what setup-envtest can download and builds the rest
// from source. setup-envtest runs for real against an envtest release index
// served on the loopback address, holding an archive of stand-in binaries;
// the source build is a stand-in that records what it was asked to build
// (the real one takes ten minutes).
package envtestassets_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/meshrelay/meshrelay/internal/testenv"
)

// version is the Kubernetes version asked for; the script passes it on
// and setup-envtest looks it up in the index, nothing more.
const version = "1.37.2"

var binaries = []string{"etcd", "kube-apiserver", "kube-controller-manager", "kubectl"}

// stub is a stand-in binary that prints what it is.
func stub(what string) []byte {
	return []byte("#!/bin/sh\necho " + what + "\n")
}

// archive returns an envtest archive of stand-ins for etcd, kube-apiserver
// and kubectl, laid out as the published ones are.
func archive(t *testing.T) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, name := range []string{"etcd", "kube-apiserver", "kubectl"} {
		body := stub("downloaded " + name)
		if err := tw.WriteHeader(&tar.Header{Name: "controller-tools/envtest/" + name, Mode: 0o755, Size: int64(len(body)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// serveIndex serves an envtest release index that lists archive for
// version on this platform (or lists nothing when archive is nil), with
// its SHA-512 or, when corrupt, another one, and counts the requests it
// gets.
func serveIndex(t *testing.T, archive []byte, corrupt bool) (indexURL string, requests *atomic.Int32) {
	t.Helper()
	requests = &atomic.Int32{}
	name := fmt.Sprintf("envtest-v%s-%s-%s.tar.gz", version, runtime.GOOS, runtime.GOARCH)
	mux := http.NewServeMux()
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	mux.HandleFunc("/envtest-releases.yaml", func(w http.ResponseWriter, _ *http.Request) {
		requests.Add(1)
		if archive == nil {
			fmt.Fprintln(w, "releases: {}")
			return
		}
		sum := sha512.Sum512(archive)
		if corrupt {
			sum = sha512.Sum512(append(archive, 0))
		}
		fmt.Fprintf(w, "releases:\n  v%s:\n    %s:\n      hash: %s\n      selfLink: %s/%s\n", version, name, hex.EncodeToString(sum[:]), srv.URL, name)
	})
	mux.HandleFunc("/"+name, func(w http.ResponseWriter, _ *http.Request) {
		requests.Add(1)
		w.Write(archive)
	})
	return srv.URL + "/envtest-releases.yaml", requests
}

// builder writes a stand-in for hack/build-controlplane.sh that records,
// in its log, the binaries DEST held when it was called, then adds the
// missing ones as "built".
func builder(t *testing.T) (path, log string) {
	t.Helper()
	dir := t.TempDir()
	path, log = filepath.Join(dir, "build.sh"), filepath.Join(dir, "build.log")
	script := `#!/bin/sh
set -e
dest=$1
echo "called with $1 $2" >>"` + log + `"
mkdir -p "$dest"
for b in ` + strings.Join(binaries, " ") + `; do
	if [ -x "$dest/$b" ]; then echo "had $b" >>"` + log + `"; else printf '#!/bin/sh\necho built %s\n' "$b" >"$dest/$b"; chmod +x "$dest/$b"; fi
done
`
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return path, log
}

// setupEnvtest returns the path $SETUP_ENVTEST names, failing the test when
// it is not an executable; it skips under -short, which builds no tools.
func setupEnvtest(t *testing.T) (root, path string) {
	t.Helper()
	if testing.Short() {
		t.Skip("needs setup-envtest, which make test-unit does not build: run make test")
	}
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	fix := fmt.Sprintf("run make test, or make %s and set SETUP_ENVTEST to it", filepath.Join(root, "bin", "tools", "setup-envtest"))
	path = os.Getenv("SETUP_ENVTEST")
	if path == "" {
		t.Fatalf("$SETUP_ENVTEST is not set: %s", fix)
	}
	if fi, err := os.Stat(path); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
		t.Fatalf("$SETUP_ENVTEST=%s is not an executable (%v): %s", path, err, fix)
	}
	return root, path
}

// contents returns what each binary in dest prints, "" for a missing one.
func contents(t *testing.T, dest string) map[string]string {
	t.Helper()
	got := map[string]string{}
	for _, b := range binaries {
		out, err := exec.CommandContext(t.Context(), filepath.Join(dest, b)).Output()
		if err == nil {
			got[b] = strings.TrimSpace(string(out))
		} else if !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("failed to run %s: %v", b, err)
		}
	}
	return got
}

// TestEnvtestAssets runs hack/envtest-assets.sh on a DEST holding some of
// the binaries, with setup-envtest reading an index on the loopback
// address, and checks which binaries end up downloaded, kept or built.
func TestEnvtestAssets(t *testing.T) {
	root, setup := setupEnvtest(t)
	for _, tc := range []struct {
		name string
		// present are the binaries DEST holds before, as "kept <name>".
		present []string
		archive bool
		corrupt bool
		env     []string
		// want is what each binary prints afterwards; wantBuildHad the
		// binaries DEST held when the source build was called (nil: not
		// called); wantRequests whether the index was asked.
		want         map[string]string
		wantBuildHad []string
		wantOut      string
		wantRequests bool
	}{{
		name:         "every binary present: nothing downloaded or built",
		present:      binaries,
		archive:      true,
		want:         map[string]string{"etcd": "kept etcd", "kube-apiserver": "kept kube-apiserver", "kube-controller-manager": "kept kube-controller-manager", "kubectl": "kept kubectl"},
		wantOut:      "all present in",
		wantRequests: false,
	}, {
		name:         "none present: etcd, kube-apiserver and kubectl downloaded, kube-controller-manager built",
		archive:      true,
		want:         map[string]string{"etcd": "downloaded etcd", "kube-apiserver": "downloaded kube-apiserver", "kube-controller-manager": "built kube-controller-manager", "kubectl": "downloaded kubectl"},
		wantBuildHad: []string{"etcd", "kube-apiserver", "kubectl"},
		wantOut:      "building from source what the envtest archive lacks: kube-controller-manager",
		wantRequests: true,
	}, {
		name:         "kubectl missing: only it is downloaded, the others kept",
		present:      []string{"etcd", "kube-apiserver", "kube-controller-manager"},
		archive:      true,
		want:         map[string]string{"etcd": "kept etcd", "kube-apiserver": "kept kube-apiserver", "kube-controller-manager": "kept kube-controller-manager", "kubectl": "downloaded kubectl"},
		wantBuildHad: binaries,
		wantOut:      "kubectl: from the envtest archive",
		wantRequests: true,
	}, {
		name:         "no archive for the version: everything built from source",
		archive:      false,
		want:         map[string]string{"etcd": "built etcd", "kube-apiserver": "built kube-apiserver", "kube-controller-manager": "built kube-controller-manager", "kubectl": "built kubectl"},
		wantBuildHad: []string{},
		wantOut:      "setup-envtest could not provide Kubernetes " + version,
		wantRequests: true,
	}, {
		name:         "an archive whose SHA-512 is not the index's: not used, everything built from source",
		archive:      true,
		corrupt:      true,
		want:         map[string]string{"etcd": "built etcd", "kube-apiserver": "built kube-apiserver", "kube-controller-manager": "built kube-controller-manager", "kubectl": "built kubectl"},
		wantBuildHad: []string{},
		wantOut:      "setup-envtest could not provide Kubernetes " + version,
		wantRequests: true,
	}, {
		name:         "ENVTEST_DOWNLOAD=0: everything built from source, the index never asked",
		archive:      true,
		env:          []string{"ENVTEST_DOWNLOAD=0"},
		want:         map[string]string{"etcd": "built etcd", "kube-apiserver": "built kube-apiserver", "kube-controller-manager": "built kube-controller-manager", "kubectl": "built kubectl"},
		wantBuildHad: []string{},
		wantOut:      "ENVTEST_DOWNLOAD=0: not downloading",
		wantRequests: false,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			var arch []byte
			if tc.archive {
				arch = archive(t)
			}
			index, requests := serveIndex(t, arch, tc.corrupt)
			build, log := builder(t)
			dest := filepath.Join(t.TempDir(), "k8s", version+"-"+runtime.GOOS+"-"+runtime.GOARCH)
			if len(tc.present) > 0 {
				if err := os.MkdirAll(dest, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			for _, b := range tc.present {
				if err := os.WriteFile(filepath.Join(dest, b), stub("kept "+b), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			cmd := exec.CommandContext(t.Context(), filepath.Join(root, "hack", "envtest-assets.sh"), dest, version)
			cmd.Env = append(os.Environ(), append([]string{
				"SETUP_ENVTEST=" + setup, "ENVTEST_INDEX=" + index, "ENVTEST_STORE=" + t.TempDir(),
				"BUILD_CONTROLPLANE=" + build, "ENVTEST_DOWNLOAD="}, tc.env...)...)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("hack/envtest-assets.sh: %v\n%s", err, out)
			}
			if !strings.Contains(string(out), tc.wantOut) {
				t.Errorf("output lacks %q:\n%s", tc.wantOut, out)
			}
			got := contents(t, dest)
			for _, b := range binaries {
				if got[b] != tc.want[b] {
					t.Errorf("%s is %q, want %q\n%s", b, got[b], tc.want[b], out)
				}
			}
			if asked := requests.Load() > 0; asked != tc.wantRequests {
				t.Errorf("the index was asked %d times, want asked=%v\n%s", requests.Load(), tc.wantRequests, out)
			}
			logged, err := os.ReadFile(log)
			switch {
			case tc.wantBuildHad == nil && err == nil:
				t.Errorf("the source build was called, want not:\n%s", logged)
			case tc.wantBuildHad != nil && err != nil:
				t.Errorf("the source build was not called (%v):\n%s", err, out)
			case tc.wantBuildHad != nil:
				var had []string
				for _, line := range strings.Split(strings.TrimSpace(string(logged)), "\n") {
					if b, ok := strings.CutPrefix(line, "had "); ok {
						had = append(had, b)
					}
				}
				if strings.Join(had, " ") != strings.Join(tc.wantBuildHad, " ") {
					t.Errorf("the source build found %v in DEST, want %v", had, tc.wantBuildHad)
				}
				if !strings.Contains(string(logged), "called with "+dest+" "+version) {
					t.Errorf("the source build was not called with DEST and VERSION:\n%s", logged)
				}
			}
		})
	}
}
