// Package keyfiles writes files that hold private keys, as relayctl gen
// and relayctl backup do: never half written, always with the mode asked
// for, and never over an existing file unless told to replace it.
package keyfiles

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// File is one file to write.
type File struct {
	Path string
	Data []byte
	Mode fs.FileMode
}

// Existing returns the paths of files that already exist, so that a
// caller can refuse them all before it writes any.
func Existing(files []File) ([]string, error) {
	var exist []string
	for _, f := range files {
		_, err := os.Lstat(f.Path)
		switch {
		case err == nil:
			exist = append(exist, f.Path)
		case !errors.Is(err, fs.ErrNotExist):
			return nil, fmt.Errorf("failed to check %s: %w", f.Path, err)
		}
	}
	return exist, nil
}

// namedAtMost is how many existing files ExistsError names; it counts
// the rest, so that the error stays one line.
const namedAtMost = 5

// ExistsError is the error for files that already exist.
func ExistsError(paths ...string) error {
	const fix = "write to another folder, or overwrite with --force"
	switch n := len(paths); {
	case n == 1:
		return fmt.Errorf("%s already exists: remove it, %s", paths[0], fix)
	case n <= namedAtMost:
		return fmt.Errorf("%s already exist: remove them, %s", strings.Join(paths, ", "), fix)
	default:
		return fmt.Errorf("%s and %d more files already exist: remove them, %s", strings.Join(paths[:namedAtMost], ", "), n-namedAtMost, fix)
	}
}

// Write writes f through a temporary file in its folder, which must exist,
// so that f.Path never holds half a file and always gets f.Mode. Without
// replace, a file that appeared at f.Path since it was checked is kept and
// Write fails.
func Write(f File, replace bool) (err error) {
	tmp, err := os.CreateTemp(filepath.Dir(f.Path), "."+filepath.Base(f.Path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("failed to create a file beside %s: %w", f.Path, err)
	}
	defer func() {
		if rerr := os.Remove(tmp.Name()); err == nil && rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
			err = fmt.Errorf("failed to remove %s: %w", tmp.Name(), rerr)
		}
	}()
	_, err = tmp.Write(f.Data)
	if err == nil {
		err = tmp.Chmod(f.Mode)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("failed to write %s: %w", f.Path, err)
	}
	if replace {
		err = os.Rename(tmp.Name(), f.Path)
	} else {
		err = os.Link(tmp.Name(), f.Path)
	}
	switch {
	case errors.Is(err, fs.ErrExist):
		return ExistsError(f.Path)
	case err != nil:
		return fmt.Errorf("failed to write %s: %w", f.Path, err)
	}
	return nil
}
