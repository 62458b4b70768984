package manifest

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Files returns the manifest files at path: path itself when it is a file,
// whatever its name; for a folder, the .yaml, .yml and .json files under it
// in lexical order, leaving out hidden folders (.git, .github) and
// kustomization files, which are not manifests. Symbolic links to folders
// are not followed. Errors are *Error values; a folder without manifest
// files is one.
func Files(path string) ([]string, error) {
	info, err := os.Stat(path)
	if err != nil {
		return nil, &Error{Source: Source{File: path}, Err: fmt.Errorf("failed to read: %w", withoutPath(err))}
	}
	if !info.IsDir() {
		return []string{path}, nil
	}
	var files []string
	err = filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return &Error{Source: Source{File: p}, Err: fmt.Errorf("failed to read: %w", withoutPath(err))}
		}
		name := d.Name()
		if d.IsDir() {
			if p != path && strings.HasPrefix(name, ".") {
				return filepath.SkipDir
			}
			return nil
		}
		if !isManifestName(name) {
			return nil
		}
		if d.Type()&fs.ModeSymlink != 0 {
			if target, err := os.Stat(p); err == nil && target.IsDir() {
				return nil
			}
		}
		files = append(files, p)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, &Error{Source: Source{File: path}, Err: errors.New("no .yaml, .yml or .json files in this folder")}
	}
	return files, nil
}

func isManifestName(name string) bool {
	switch strings.ToLower(filepath.Ext(name)) {
	case ".yaml", ".yml", ".json":
	default:
		return false
	}
	switch name {
	case "kustomization.yaml", "kustomization.yml":
		return false
	}
	return true
}
