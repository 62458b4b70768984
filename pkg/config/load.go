package config

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/pflag"
	"sigs.k8s.io/yaml"
)

// MaxFileBytes bounds a config file; real ones are a few hundred bytes.
const MaxFileBytes = 1 << 20

// Decode reads a YAML or JSON config file from r into into, over the values
// already there. Keys it does not know are errors that name the key.
func Decode(r io.Reader, into any) error {
	data, err := io.ReadAll(io.LimitReader(r, MaxFileBytes+1))
	if err != nil {
		return fmt.Errorf("failed to read config: %w", err)
	}
	if len(data) > MaxFileBytes {
		return fmt.Errorf("config is larger than %d bytes", MaxFileBytes)
	}
	if err := yaml.UnmarshalStrict(data, into); err != nil {
		return fmt.Errorf("failed to parse config: %w", err)
	}
	return nil
}

// Load applies the config file named by the --config flag of fs (if any)
// to into, then applies again every flag set on the command line, so that
// flags win over the file and the file wins over defaults. Call it after
// fs has parsed the command line; into must be what fs's flags are bound to.
func Load(fs *pflag.FlagSet, path string, into any) error {
	if path == "" {
		return nil
	}
	type setting struct{ name, value string }
	var given []setting
	var visitErr error
	fs.Visit(func(f *pflag.Flag) {
		if sv, ok := f.Value.(pflag.SliceValue); ok {
			visitErr = errors.Join(visitErr, fmt.Errorf("flag --%s is a list (%v), which Load cannot re-apply", f.Name, sv.GetSlice()))
			return
		}
		given = append(given, setting{f.Name, f.Value.String()})
	})
	if visitErr != nil {
		return visitErr
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("failed to open config file: %w", err)
	}
	defer f.Close()
	if err := Decode(f, into); err != nil {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	for _, s := range given {
		if err := fs.Set(s.name, s.value); err != nil {
			return fmt.Errorf("failed to re-apply flag --%s: %w", s.name, err)
		}
	}
	return nil
}
