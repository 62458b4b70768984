package manifest

import (
	"errors"
	"fmt"
	"strings"

	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Source is where an object came from.
type Source struct {
	// File is the path of the file, or the name given to a stream.
	File string `json:"file"`
	// Document counts the documents of the file that are not empty, from 1;
	// 0 for a problem with the file as a whole.
	Document int `json:"document,omitempty"`
	// Line is the line the document starts on; 0 when unknown (JSON
	// streams).
	Line int `json:"line,omitempty"`
	// Item counts the items of a List from 1; 0 outside a List.
	Item int `json:"item,omitempty"`
}

// String reads as "overlays/x/secrets.yaml:14 (document 2, item 3)": the
// file and line as editors and compilers write them, then the document.
func (s Source) String() string {
	var b strings.Builder
	b.WriteString(s.File)
	if s.Line > 0 {
		fmt.Fprintf(&b, ":%d", s.Line)
	}
	if s.Document > 0 {
		fmt.Fprintf(&b, " (document %d", s.Document)
		if s.Item > 0 {
			fmt.Fprintf(&b, ", item %d", s.Item)
		}
		b.WriteString(")")
	}
	return b.String()
}

// Error is a document that could not be decoded, or a file that could not
// be read.
type Error struct {
	Source Source
	Err    error
}

func (e *Error) Error() string { return e.Source.String() + ": " + e.Err.Error() }

func (e *Error) Unwrap() error { return e.Err }

// Object is one manifest of the input.
type Object struct {
	Source Source
	// APIVersion, Kind, Namespace and Name are as written; Namespace is
	// empty when the manifest names none.
	APIVersion string
	Kind       string
	Namespace  string
	Name       string
	// Decoded is the typed object (*corev1.Secret, ...) when its kind is
	// one the Decoder decodes, nil for a kind it skips.
	Decoded client.Object
}

// Result is what a stream held, in the order it held it.
type Result struct {
	Objects []Object
	// Errors are *Error values, one per document that could not be
	// decoded; the other documents are still in Objects.
	Errors []error
}

// Add appends other's objects and errors to r.
func (r *Result) Add(other *Result) {
	r.Objects = append(r.Objects, other.Objects...)
	r.Errors = append(r.Errors, other.Errors...)
}

// Err returns the errors joined, nil when there are none.
func (r *Result) Err() error { return errors.Join(r.Errors...) }

func (r *Result) fail(src Source, format string, args ...any) {
	r.Errors = append(r.Errors, &Error{Source: src, Err: fmt.Errorf(format, args...)})
}
