package manifest_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshrelay/meshrelay/internal/relayctl/manifest"
)

func TestFilesWalksFoldersForManifests(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{
		"b.yaml", "a/secrets.yml", "a/deep/er/list.JSON", "notes.txt", "kustomization.yaml",
		".git/config.yaml", "a/.hidden/x.yaml",
	} {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	got, err := manifest.Files(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"a/deep/er/list.JSON", "a/secrets.yml", "b.yaml"}
	for i := range got {
		got[i], _ = filepath.Rel(dir, got[i])
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("Files = %v, want %v", got, want)
	}

	if got, err := manifest.Files(filepath.Join(dir, "notes.txt")); err != nil || len(got) != 1 {
		t.Errorf("a file named on its own is read whatever its name: %v, %v", got, err)
	}
	if _, err := manifest.Files(filepath.Join(dir, "missing")); err == nil || !strings.Contains(err.Error(), "missing: failed to read: no such file") {
		t.Errorf("Files of a missing path = %v", err)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.Mkdir(empty, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := manifest.Files(empty); err == nil || !strings.Contains(err.Error(), "no .yaml, .yml or .json files") {
		t.Errorf("Files of an empty folder = %v", err)
	}
}
