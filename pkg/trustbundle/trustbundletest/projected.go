// Package trustbundletest writes a folder the way the kubelet writes a
// projected volume, for the tests of what reads a mounted trust bundle.
package trustbundletest

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
)

// generation names each version of a folder's files.
var generation atomic.Int64

// WriteProjected makes dir hold exactly files (name to content) as the
// kubelet's atomic writer does: the files go into a new hidden folder,
// the symbolic link ..data is swapped to it in one rename, each name is a
// link to ..data/<name>, names no longer in files are removed, and the
// previous hidden folder is deleted. A reader never sees half of a version.
func WriteProjected(dir string, files map[string][]byte) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	gen := fmt.Sprintf("..gen_%d", generation.Add(1))
	if err := os.Mkdir(filepath.Join(dir, gen), 0o755); err != nil {
		return err
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, gen, name), content, 0o644); err != nil {
			return err
		}
	}
	old, _ := os.Readlink(filepath.Join(dir, "..data"))
	tmp := filepath.Join(dir, "..data_tmp")
	_ = os.Remove(tmp)
	if err := os.Symlink(gen, tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
		return err
	}
	for name := range files {
		link := filepath.Join(dir, name)
		if _, err := os.Lstat(link); err == nil {
			continue
		}
		if err := os.Symlink(filepath.Join("..data", name), link); err != nil {
			return err
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if _, keep := files[e.Name()]; keep || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	if old != "" && old != gen {
		return os.RemoveAll(filepath.Join(dir, old))
	}
	return nil
}
