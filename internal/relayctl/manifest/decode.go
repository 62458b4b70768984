package manifest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	kjson "k8s.io/apimachinery/pkg/runtime/serializer/json"

	meshv1alpha1 "github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
)

// MaxDocumentBytes bounds one document (and one line) of a stream: above
// the API server's 3 MiB request limit, so that nothing it would accept is
// refused here.
const MaxDocumentBytes = 4 << 20

// WebhookKinds are the kinds relay-webhook checks.
var WebhookKinds = []schema.GroupVersionKind{
	corev1.SchemeGroupVersion.WithKind("Secret"),
	cmapi.SchemeGroupVersion.WithKind(cmapi.CertificateKind),
	meshv1alpha1.GroupVersion.WithKind("KubernetesCluster"),
}

// Decoder decodes manifests into typed objects of the kinds it was given,
// strictly: an unknown or duplicate field is an error, as kubectl's default
// --validate=strict makes it. It is safe for concurrent use.
type Decoder struct {
	scheme *runtime.Scheme
	kinds  map[schema.GroupKind][]string
	codec  *kjson.Serializer
}

// NewDecoder returns a decoder of kinds, which scheme must know.
func NewDecoder(scheme *runtime.Scheme, kinds ...schema.GroupVersionKind) (*Decoder, error) {
	d := &Decoder{
		scheme: scheme,
		kinds:  map[schema.GroupKind][]string{},
		codec:  kjson.NewSerializerWithOptions(kjson.DefaultMetaFactory, scheme, scheme, kjson.SerializerOptions{Strict: true}),
	}
	for _, k := range kinds {
		if !scheme.Recognizes(k) {
			return nil, fmt.Errorf("kind %s is not in the scheme", k)
		}
		d.kinds[k.GroupKind()] = append(d.kinds[k.GroupKind()], k.GroupVersion().String())
	}
	return d, nil
}

// DecodeFile decodes the file at path.
func (d *Decoder) DecodeFile(path string) *Result {
	f, err := os.Open(path)
	if err != nil {
		res := &Result{}
		res.fail(Source{File: path}, "failed to open: %w", withoutPath(err))
		return res
	}
	defer f.Close()
	return d.Decode(path, f)
}

// Decode decodes the stream r, named name in sources: YAML documents
// separated by "---" lines, or, when it starts with "{", a stream of JSON
// objects. Each document is one object or a List of them. Decode reads to
// the end unless a line or a JSON object exceeds MaxDocumentBytes or the
// stream cannot be read, which ends it with an error.
func (d *Decoder) Decode(name string, r io.Reader) *Result {
	res := &Result{}
	br := bufio.NewReader(r)
	first, err := firstByte(br)
	switch {
	case errors.Is(err, io.EOF):
		return res
	case err != nil:
		res.fail(Source{File: name}, "failed to read: %w", err)
	case first == '{':
		d.decodeJSON(res, name, br)
	default:
		d.decodeYAML(res, name, br)
	}
	return res
}

// withoutPath drops the path from an *fs.PathError, which the Source
// already names.
func withoutPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// firstByte returns the first byte of br that is not white space, without
// consuming it, after dropping a byte order mark. Past a buffer of white
// space it gives up and returns a space: the stream is then read as YAML.
func firstByte(br *bufio.Reader) (byte, error) {
	if b, _ := br.Peek(len(bom)); bytes.Equal(b, bom) {
		if _, err := br.Discard(len(bom)); err != nil {
			return 0, err
		}
	}
	for n := 1; ; n++ {
		b, err := br.Peek(n)
		if errors.Is(err, bufio.ErrBufferFull) {
			return ' ', nil
		}
		if len(b) < n {
			if err == nil {
				err = io.EOF
			}
			return 0, err
		}
		switch c := b[n-1]; c {
		case ' ', '\t', '\r', '\n':
		default:
			return c, nil
		}
	}
}

var bom = []byte{0xef, 0xbb, 0xbf}

// decodeYAML splits a YAML stream at "---" lines.
func (d *Decoder) decodeYAML(res *Result, name string, r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), MaxDocumentBytes)
	var (
		doc               bytes.Buffer
		line, start, docs int
		tooLarge          bool
	)
	flush := func() {
		if start > 0 {
			docs++
			src := Source{File: name, Document: docs, Line: start}
			if tooLarge {
				res.fail(src, "larger than %d bytes", MaxDocumentBytes)
			} else {
				d.document(res, src, doc.Bytes())
			}
		}
		doc.Reset()
		start, tooLarge = 0, false
	}
	for sc.Scan() {
		line++
		text := sc.Bytes()
		if isSeparator(text) {
			flush()
			continue
		}
		if start == 0 && isBlank(text) {
			continue
		}
		if start == 0 {
			start = line
		}
		if tooLarge || doc.Len()+len(text)+1 > MaxDocumentBytes {
			tooLarge = true
			continue
		}
		doc.Write(text)
		doc.WriteByte('\n')
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			err = fmt.Errorf("line %d is longer than %d bytes", line+1, MaxDocumentBytes)
		}
		res.fail(Source{File: name, Document: docs + 1, Line: max(start, line+1)}, "failed to read, stopped here: %w", err)
		return
	}
	flush()
}

// isSeparator reports whether line is "---", alone or before a comment.
func isSeparator(line []byte) bool {
	rest, ok := bytes.CutPrefix(line, []byte("---"))
	if !ok {
		return false
	}
	rest = bytes.TrimSpace(rest)
	return len(rest) == 0 || rest[0] == '#'
}

// isBlank reports whether line holds nothing but white space or a comment.
func isBlank(line []byte) bool {
	t := bytes.TrimSpace(line)
	return len(t) == 0 || t[0] == '#' || strings.HasPrefix(string(t), "%") // directives such as %YAML 1.2
}

// decodeJSON decodes a stream of JSON objects.
func (d *Decoder) decodeJSON(res *Result, name string, r io.Reader) {
	lr := &valueLimitReader{r: r}
	dec := json.NewDecoder(lr)
	for n := 1; ; n++ {
		lr.start = dec.InputOffset()
		var raw json.RawMessage
		err := dec.Decode(&raw)
		if errors.Is(err, io.EOF) {
			return
		}
		src := Source{File: name, Document: n}
		if err != nil {
			if errors.Is(err, errValueTooLarge) {
				res.fail(src, "larger than %d bytes, stopped here", MaxDocumentBytes)
			} else {
				res.fail(src, "invalid JSON, stopped here: %w", err)
			}
			return
		}
		d.document(res, src, raw)
	}
}

var errValueTooLarge = errors.New("JSON value too large")

// valueLimitReader reads at most MaxDocumentBytes+1 bytes past start, the
// offset where the current value began, and then fails: a value within the
// bound is read whole, a larger one is never held.
type valueLimitReader struct {
	r     io.Reader
	read  int64
	start int64
}

func (l *valueLimitReader) Read(p []byte) (int, error) {
	left := l.start + MaxDocumentBytes + 1 - l.read
	if left <= 0 {
		return 0, errValueTooLarge
	}
	if int64(len(p)) > left {
		p = p[:left]
	}
	n, err := l.r.Read(p)
	l.read += int64(n)
	return n, err
}
