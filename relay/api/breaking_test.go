// Package api_test checks the relay API against the images of its releases
// in releases/, with hack/api-breaking.sh, the check make verify runs: the
// version-skew promise of docs/releases.md holds only while it bites.
package api_test

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshrelay/meshrelay/internal/testenv"
)

// bufEnv names the buf binary the tests run; make test builds the pinned
// one and sets it.
const bufEnv = "BUF"

// protoPath is the relay API's proto file, relative to the repository root
// and to a buf module copied from it.
const protoPath = "relay/api/v1/relay.proto"

// buf returns the path $BUF names, failing the test when it is not an
// executable file.
func buf(t *testing.T, root string) string {
	t.Helper()
	fix := fmt.Sprintf("run make test, or make %s and set %s to it", filepath.Join(root, "bin", "tools", "buf"), bufEnv)
	path := os.Getenv(bufEnv)
	if path == "" {
		t.Fatalf("$%s is not set: the relay API is checked with buf breaking: %s", bufEnv, fix)
	}
	if fi, err := os.Stat(path); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
		t.Fatalf("$%s=%s is not an executable (%v): %s", bufEnv, path, err, fix)
	}
	return path
}

// checkBreaking runs hack/api-breaking.sh on module and returns its exit
// status and output; it fails the test when the script cannot be run.
func checkBreaking(t *testing.T, root, bufPath, module string) (int, string) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), filepath.Join(root, "hack", "api-breaking.sh"), module)
	cmd.Env = append(os.Environ(), bufEnv+"="+bufPath, "API_RELEASES="+filepath.Join(root, "relay", "api", "releases"))
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0, string(out)
	case errors.As(err, &exit):
		return exit.ExitCode(), string(out)
	default:
		t.Fatalf("failed to run hack/api-breaking.sh: %v\n%s", err, out)
		return 0, ""
	}
}

// setup returns the repository root and buf, and skips the test under
// -short (make test-unit), which builds no tools.
func setup(t *testing.T) (root, bufPath string) {
	t.Helper()
	if testing.Short() {
		t.Skip("needs buf, which make test-unit does not build: run make test")
	}
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	return root, buf(t, root)
}

// TestRelayAPIIsCompatibleWithTheNewestRelease runs make verify's check on
// the repository as it is.
func TestRelayAPIIsCompatibleWithTheNewestRelease(t *testing.T) {
	root, bufPath := setup(t)
	code, out := checkBreaking(t, root, bufPath, root)
	if code != 0 {
		t.Fatalf("hack/api-breaking.sh exited %d on the repository:\n%s", code, out)
	}
	if !strings.Contains(out, "compatible with release v") {
		t.Errorf("hack/api-breaking.sh does not name the release it checked against:\n%s", out)
	}
}

// TestRelayAPIBreakingChangesAreRefused copies the relay API into a buf
// module of its own, changes it as a careless edit would, and runs the
// same check on it: each change an older peer cannot read is refused,
// naming what changed, and an added field is not.
func TestRelayAPIBreakingChangesAreRefused(t *testing.T) {
	root, bufPath := setup(t)
	proto, err := os.ReadFile(filepath.Join(root, protoPath))
	if err != nil {
		t.Fatal(err)
	}
	bufYAML, err := os.ReadFile(filepath.Join(root, "buf.yaml"))
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name     string
		old, new string // the edit: old must occur exactly once in the proto
		wantCode int
		wantOut  string
	}{{
		name:     "a field added to a message is compatible",
		old:      "  bytes csr = 3;\n",
		new:      "  bytes csr = 3;\n  string added_in_a_later_release = 4;\n",
		wantCode: 0,
		wantOut:  "compatible with release v",
	}, {
		name:     "a field removed from a message is refused",
		old:      "  string token = 2;\n",
		new:      "",
		wantCode: 1,
		wantOut:  `field "2" with name "token" on message "BootstrapRequest" was deleted`,
	}, {
		name:     "a field renumbered is refused",
		old:      "  string token = 2;\n",
		new:      "  string token = 20;\n",
		wantCode: 1,
		wantOut:  `"BootstrapRequest"`,
	}, {
		name:     "a field whose type changed is refused",
		old:      "  string cluster = 1;\n",
		new:      "  bytes cluster = 1;\n",
		wantCode: 1,
		wantOut:  `"cluster"`,
	}, {
		name:     "an RPC removed is refused",
		old:      "  rpc Renew(RenewRequest) returns (CertificateResponse);\n",
		new:      "",
		wantCode: 1,
		wantOut:  `"Renew"`,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			if n := strings.Count(string(proto), tc.old); n != 1 {
				t.Fatalf("%s holds %q %d times, want once: update this case to the proto", protoPath, tc.old, n)
			}
			module := t.TempDir()
			changed := strings.Replace(string(proto), tc.old, tc.new, 1)
			if err := os.MkdirAll(filepath.Join(module, filepath.Dir(protoPath)), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(module, protoPath), []byte(changed), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(module, "buf.yaml"), bufYAML, 0o644); err != nil {
				t.Fatal(err)
			}
			code, out := checkBreaking(t, root, bufPath, module)
			if code != tc.wantCode {
				t.Fatalf("hack/api-breaking.sh exited %d, want %d:\n%s", code, tc.wantCode, out)
			}
			if !strings.Contains(out, tc.wantOut) {
				t.Errorf("output lacks %q:\n%s", tc.wantOut, out)
			}
		})
	}
}
