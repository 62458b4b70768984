package backup

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Modes of what Backup writes: the files hold private keys.
const (
	dirMode  = 0o700
	fileMode = 0o600
)

// BackupOptions say what Backup saves and where.
type BackupOptions struct {
	// Namespace holds the relay secrets.
	Namespace string
	// Names are the secrets to save; empty means DefaultNames.
	Names []string
	// Dir is the folder the files go to, created (mode 0700) when missing.
	Dir string
	// Force replaces files that already exist.
	Force bool
}

// Backup reads every secret of o.Names in o.Namespace and writes each one
// that exists as a clean manifest (see Clean) to Dir/<name>.yaml, mode
// 0600. A secret that does not exist is reported as missing and skipped;
// it is an error when none exists. Before writing anything it refuses, by
// name, every file that already exists, unless o.Force.
func Backup(ctx context.Context, c client.Reader, o BackupOptions) ([]Result, error) {
	if o.Namespace == "" || o.Dir == "" {
		return nil, errors.New("a namespace and a folder are both required")
	}
	names := namesOr(o.Names)
	results := make([]Result, 0, len(names))
	type planned struct {
		path string
		doc  []byte
	}
	var files []planned
	var exist []string
	for _, name := range names {
		path := fileName(o.Dir, name)
		var s corev1.Secret
		err := c.Get(ctx, types.NamespacedName{Namespace: o.Namespace, Name: name}, &s)
		switch {
		case apierrors.IsNotFound(err):
			detail := fmt.Sprintf("not found in namespace %s: skipped", o.Namespace)
			if _, err := os.Lstat(path); err == nil {
				detail += fmt.Sprintf("; %s, from an earlier backup, is left as it is", path)
			}
			results = append(results, Result{Secret: name, Action: ActionMissing, Detail: detail})
			continue
		case err != nil:
			return nil, fmt.Errorf("failed to read secret %s/%s: %w", o.Namespace, name, err)
		}
		doc, err := Marshal(&s)
		if err != nil {
			return nil, err
		}
		files = append(files, planned{path, doc})
		results = append(results, Result{Secret: name, Action: ActionSaved, Detail: path})
		if _, err := os.Lstat(path); err == nil {
			exist = append(exist, path)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("failed to check %s: %w", path, err)
		}
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("none of the relay secrets (%s) exists in namespace %s: check the context and the namespace",
			strings.Join(names, ", "), o.Namespace)
	}
	if len(exist) > 0 && !o.Force {
		return nil, fmt.Errorf("%s already %s: remove %s, save to another folder, or overwrite with --force",
			strings.Join(exist, ", "), plural(len(exist), "exists", "exist"), plural(len(exist), "it", "them"))
	}
	if err := os.MkdirAll(o.Dir, dirMode); err != nil {
		return nil, fmt.Errorf("failed to create folder %s: %w", o.Dir, err)
	}
	for _, f := range files {
		if err := writeFile(o.Dir, f.path, f.doc, o.Force); err != nil {
			return nil, err
		}
	}
	return results, nil
}

// writeFile writes data to path through a temporary file in dir, so that
// path never holds half a secret and always gets fileMode. Without
// replace, a file that appeared at path since it was checked is kept and
// the write fails.
func writeFile(dir, path string, data []byte, replace bool) (err error) {
	tmp, err := os.CreateTemp(dir, ".backup-*")
	if err != nil {
		return fmt.Errorf("failed to create a file in %s: %w", dir, err)
	}
	defer func() {
		if rerr := os.Remove(tmp.Name()); err == nil && rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
			err = fmt.Errorf("failed to remove %s: %w", tmp.Name(), rerr)
		}
	}()
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Chmod(fileMode)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("failed to write %s: %w", path, err)
	}
	if replace {
		err = os.Rename(tmp.Name(), path)
	} else {
		err = os.Link(tmp.Name(), path)
	}
	switch {
	case errors.Is(err, fs.ErrExist):
		return fmt.Errorf("%s already exists: remove it, save to another folder, or overwrite with --force", path)
	case err != nil:
		return fmt.Errorf("failed to write %s: %w", path, err)
	}
	return nil
}
