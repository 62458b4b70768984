package backup

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshrelay/meshrelay/internal/relayctl/keyfiles"
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
	// Names are the secrets to save; empty means DefaultNames and the
	// generated root of each RootTrustPolicy of Namespace.
	Names []string
	// Dir is the folder the files go to, created (mode 0700) when missing.
	Dir string
	// Force replaces files that already exist.
	Force bool
}

// Backup reads every secret of o.Names in o.Namespace (by default the
// relay secrets and root-trust.<policy> of each RootTrustPolicy whose root
// relay-server generates) and writes each one
// that exists as a clean manifest (see Clean) to Dir/<name>.yaml, mode
// 0600. A secret that does not exist is reported as missing and skipped;
// it is an error when none exists. Before writing anything it refuses, by
// name, every file that already exists, unless o.Force.
func Backup(ctx context.Context, c client.Reader, o BackupOptions) ([]Result, error) {
	if o.Namespace == "" || o.Dir == "" {
		return nil, errors.New("a namespace and a folder are both required")
	}
	names := namesOr(o.Names)
	if len(o.Names) == 0 {
		roots, err := trustRootNames(ctx, c, o.Namespace)
		if err != nil {
			return nil, err
		}
		names = append(names, roots...)
	}
	results := make([]Result, 0, len(names))
	var files []keyfiles.File
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
		files = append(files, keyfiles.File{Path: path, Data: doc, Mode: fileMode})
		results = append(results, Result{Secret: name, Action: ActionSaved, Detail: path})
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("none of the relay secrets (%s) exists in namespace %s: check the context and the namespace",
			strings.Join(names, ", "), o.Namespace)
	}
	if !o.Force {
		exist, err := keyfiles.Existing(files)
		if err != nil {
			return nil, err
		}
		if len(exist) > 0 {
			return nil, keyfiles.ExistsError(exist...)
		}
	}
	if err := os.MkdirAll(o.Dir, dirMode); err != nil {
		return nil, fmt.Errorf("failed to create folder %s: %w", o.Dir, err)
	}
	for _, f := range files {
		if err := keyfiles.Write(f, o.Force); err != nil {
			return nil, err
		}
	}
	return results, nil
}
