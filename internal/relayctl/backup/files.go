package backup

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/meshrelay/meshrelay/internal/relayctl/manifest"
	"github.com/meshrelay/meshrelay/internal/scheme"
	"github.com/meshrelay/meshrelay/pkg/relaysecret"
)

// saved is one secret read from a backup folder.
type saved struct {
	file   string
	secret *corev1.Secret
}

// load reads every *.yaml file of dir (hidden files aside) and returns the
// secrets they hold, cleaned (see Clean) and in namespace, in the order of
// names, then the generated RootTrustPolicy roots (root-trust.<policy>) by
// name when trustRoots. Each file must hold exactly one v1 Secret named in
// names (or such a root), in namespace or in none, and no two files may
// hold the same secret. When a file breaks a rule, load returns an error
// naming every such file and what is wrong with it.
func load(dir, namespace string, names []string, trustRoots bool) ([]saved, error) {
	paths, err := backupFiles(dir)
	if err != nil {
		return nil, err
	}
	scheme, err := scheme.Scheme()
	if err != nil {
		return nil, err
	}
	dec, err := manifest.NewDecoder(scheme, corev1.SchemeGroupVersion.WithKind("Secret"))
	if err != nil {
		return nil, err
	}
	var (
		problems []error
		found    = map[string]saved{}
	)
	for _, path := range paths {
		s, err := loadFile(dec, path, namespace, names, trustRoots)
		if err != nil {
			problems = append(problems, fmt.Errorf("%s: %w", path, err))
			continue
		}
		if other, dup := found[s.Name]; dup {
			problems = append(problems, fmt.Errorf("%s: secret %s is also in %s: keep one of them", path, s.Name, other.file))
			continue
		}
		found[s.Name] = saved{file: path, secret: s}
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("%d invalid %s in %s, nothing was written:\n%w",
			len(problems), plural(len(problems), "file", "files"), dir, errors.Join(problems...))
	}
	var out []saved
	for _, name := range names {
		if s, ok := found[name]; ok {
			out = append(out, s)
			delete(found, name)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(found)) {
		out = append(out, found[name])
	}
	return out, nil
}

// backupFiles returns the *.yaml files of dir in lexical order, leaving
// out hidden ones, as the shell's dir/*.yaml would.
func backupFiles(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("failed to read backup folder: %w", err)
	}
	var paths []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") || filepath.Ext(e.Name()) != ".yaml" {
			continue
		}
		paths = append(paths, filepath.Join(dir, e.Name()))
	}
	if len(paths) == 0 {
		return nil, fmt.Errorf("no .yaml files in %s: give the folder relayctl backup saved to", dir)
	}
	return paths, nil
}

// loadFile decodes and checks one backup file.
func loadFile(dec *manifest.Decoder, path, namespace string, names []string, trustRoots bool) (*corev1.Secret, error) {
	if info, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("failed to read: %w", err)
	} else if !info.Mode().IsRegular() {
		return nil, errors.New("not a regular file")
	}
	res := dec.DecodeFile(path)
	if len(res.Errors) > 0 {
		msgs := make([]string, len(res.Errors))
		for i, err := range res.Errors {
			msgs[i] = err.Error()
			if me, ok := errors.AsType[*manifest.Error](err); ok {
				msgs[i] = me.Err.Error()
				if me.Source.Line > 0 {
					msgs[i] = fmt.Sprintf("line %d: %v", me.Source.Line, me.Err)
				}
			}
		}
		return nil, errors.New(strings.Join(msgs, "; "))
	}
	switch n := len(res.Objects); {
	case n == 0:
		return nil, errors.New("empty: a backup file holds one Secret")
	case n > 1:
		return nil, fmt.Errorf("holds %d objects: a backup file holds one Secret", n)
	}
	obj := res.Objects[0]
	s, ok := obj.Decoded.(*corev1.Secret)
	if !ok {
		return nil, fmt.Errorf("%s %s %q is not a Secret: a backup file holds one v1 Secret", obj.APIVersion, obj.Kind, obj.Name)
	}
	if !slices.Contains(names, s.Name) && !(trustRoots && isTrustRoot(s.Name)) {
		also := ""
		if trustRoots {
			also = " and " + relaysecret.TrustRootName("<policy>")
		}
		return nil, fmt.Errorf("secret %q is not a relay secret: restore takes only %s%s", s.Name, strings.Join(names, ", "), also)
	}
	if s.Namespace != "" && s.Namespace != namespace {
		return nil, fmt.Errorf("secret %s is in namespace %s, not %s: restore it with --namespace %s", s.Name, s.Namespace, namespace, s.Namespace)
	}
	s.Namespace = namespace
	return Clean(s), nil
}
