package e2e

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/meshrelay/meshrelay/internal/localmesh"
	"github.com/meshrelay/meshrelay/internal/testenv"
)

// startMesh builds the four binaries, starts the local clusters of opts and
// returns a mesh over them. The processes the mesh starts are stopped, and
// their logs shown when the test failed, as the test ends.
func startMesh(ctx context.Context, t *testing.T, opts testenv.Options) (*localmesh.Mesh, *testenv.Env) {
	t.Helper()
	if testing.Short() {
		// Before building the binaries, which testenv.Start would skip too.
		t.Skip("needs local clusters, which -short (make test-unit) does not start: run make test")
	}
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	bins := t.TempDir()
	if err := localmesh.BuildBinaries(ctx, root, bins); err != nil {
		t.Fatal(err)
	}
	env := testenv.Start(t, opts)
	mesh := localmesh.New(env, root, bins, t.TempDir())
	t.Cleanup(func() {
		if t.Failed() {
			logs, _ := filepath.Glob(filepath.Join(mesh.Dir, "*.log"))
			for _, l := range logs {
				t.Logf("last lines of %s:\n%s", filepath.Base(l), testenv.TailFile(l, 30))
			}
		}
		if err := mesh.Stop(); err != nil {
			t.Error(err)
		}
	})
	return mesh, env
}
