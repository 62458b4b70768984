package keyfiles

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWriteKeepsAnExistingFileUnlessReplacing(t *testing.T) {
	dir := t.TempDir()
	f := File{Path: filepath.Join(dir, "tls.key"), Data: []byte("new"), Mode: 0o600}
	if err := os.WriteFile(f.Path, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if exist, err := Existing([]File{f, {Path: filepath.Join(dir, "absent")}}); err != nil || len(exist) != 1 || exist[0] != f.Path {
		t.Errorf("Existing = %v, %v: want only %s", exist, err, f.Path)
	}
	if err := Write(f, false); err == nil || !strings.Contains(err.Error(), "already exists") || !strings.Contains(err.Error(), "--force") {
		t.Errorf("Write over an existing file: %v, want a refusal naming --force", err)
	}
	if data, _ := os.ReadFile(f.Path); string(data) != "old" {
		t.Errorf("a refused write changed the file to %q", data)
	}
	if err := Write(f, true); err != nil {
		t.Fatal(err)
	}
	info, err := os.Stat(f.Path)
	if err != nil {
		t.Fatal(err)
	}
	if data, _ := os.ReadFile(f.Path); string(data) != "new" || info.Mode().Perm() != 0o600 {
		t.Errorf("after replacing: %q with mode %v, want \"new\" with 0600", data, info.Mode().Perm())
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".*")); len(left) > 0 {
		t.Errorf("temporary files left behind: %v", left)
	}
}

func TestExistsErrorNamesAFewAndCountsTheRest(t *testing.T) {
	if err := ExistsError("a", "b"); !strings.Contains(err.Error(), "a, b already exist") {
		t.Errorf("two files: %v", err)
	}
	err := ExistsError("a", "b", "c", "d", "e", "f", "g")
	if msg := err.Error(); !strings.Contains(msg, "a, b, c, d, e and 2 more files already exist") || strings.Contains(msg, ", f") {
		t.Errorf("seven files: %v", err)
	}
}
