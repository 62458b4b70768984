package relaysecret

import (
	"errors"
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation/field"
)

// Result is what Check found: errors make the secret unusable, warnings do
// not.
type Result struct {
	Errs     field.ErrorList
	Warnings []string
}

// OK reports whether there is no error.
func (r *Result) OK() bool { return len(r.Errs) == 0 }

// Err returns the errors on one line, each as "path: detail", or nil.
func (r *Result) Err() error {
	if len(r.Errs) == 0 {
		return nil
	}
	return errors.New(Message(r.Errs))
}

// Message renders errs on one line, each as "path: detail", as a person at
// a terminal reads them.
func Message(errs field.ErrorList) string {
	parts := make([]string, 0, len(errs))
	for _, e := range errs {
		parts = append(parts, fmt.Sprintf("%s: %s", e.Field, e.Detail))
	}
	return strings.Join(parts, "; ")
}

func (r *Result) deny(key string, format string, args ...any) {
	r.Errs = append(r.Errs, invalid(key, format, args...))
}

func (r *Result) warn(format string, args ...any) {
	r.Warnings = append(r.Warnings, fmt.Sprintf(format, args...))
}

// DataPath is the path of a secret's data key, as kubectl users read it:
// data[tls.crt].
func DataPath(key string) *field.Path { return field.NewPath("data").Key(key) }

func invalid(key string, format string, args ...any) *field.Error {
	path := field.NewPath("data")
	if key != "" {
		path = DataPath(key)
	}
	return field.Invalid(path, nil, fmt.Sprintf(format, args...))
}
