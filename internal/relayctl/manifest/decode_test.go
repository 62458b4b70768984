package manifest_test

import (
	"bytes"
	"strings"
	"testing"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/meshrelay/meshrelay/internal/relayctl/manifest"
	"github.com/meshrelay/meshrelay/internal/scheme"
	meshv1alpha1 "github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
)

func newDecoder(t testing.TB) *manifest.Decoder {
	t.Helper()
	scheme, err := scheme.Scheme()
	if err != nil {
		t.Fatal(err)
	}
	d, err := manifest.NewDecoder(scheme, manifest.WebhookKinds...)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

const stream = `# a leading comment and separator are not a document
---
apiVersion: v1
kind: Secret
metadata:
  name: relay-identity-token-secret
stringData:
  token: from-string-data
---
# only a comment
---
apiVersion: cert-manager.io/v1
kind: Certificate
metadata:
  name: relay-client
  namespace: gloo-mesh
spec:
  secretName: relay-client-tls-secret
  dnsNames: [cluster-1]
--- # a separator with a comment
apiVersion: apps/v1
kind: Deployment
metadata:
  name: relay-agent
  namespace: gloo-mesh
spec: {}
---
{"apiVersion": "meshrelay.dev/v1alpha1", "kind": "KubernetesCluster", "metadata": {"name": "cluster-1"}}
`

func TestDecodeYAMLStreamKeepsOrderTypesAndSources(t *testing.T) {
	res := newDecoder(t).Decode("all.yaml", strings.NewReader(stream))
	if err := res.Err(); err != nil {
		t.Fatal(err)
	}
	if len(res.Objects) != 4 {
		t.Fatalf("got %d objects, want 4: %+v", len(res.Objects), res.Objects)
	}
	sec, ok := res.Objects[0].Decoded.(*corev1.Secret)
	if !ok {
		t.Fatalf("object 1 is %T, want a Secret", res.Objects[0].Decoded)
	}
	if got := string(sec.Data["token"]); got != "from-string-data" || sec.StringData != nil {
		t.Errorf("stringData was not moved into data as the API server does: data %q, stringData %v", got, sec.StringData)
	}
	if src := res.Objects[0].Source; src.String() != "all.yaml:3 (document 1)" {
		t.Errorf("source of the Secret = %q, want all.yaml:3 (document 1)", src)
	}
	crt, ok := res.Objects[1].Decoded.(*cmapi.Certificate)
	if !ok || crt.Spec.SecretName != "relay-client-tls-secret" || res.Objects[1].Source.Document != 2 {
		t.Errorf("object 2 = %+v, want the Certificate as document 2", res.Objects[1])
	}
	if o := res.Objects[2]; o.Decoded != nil || o.Kind != "Deployment" || o.APIVersion != "apps/v1" || o.Name != "relay-agent" || o.Source.Document != 3 {
		t.Errorf("object 3 = %+v, want the Deployment skipped (Decoded nil) as document 3", o)
	}
	if kc, ok := res.Objects[3].Decoded.(*meshv1alpha1.KubernetesCluster); !ok || kc.Name != "cluster-1" || kc.Kind != "KubernetesCluster" {
		t.Errorf("object 4 = %+v, want the KubernetesCluster written as JSON inside the YAML stream", res.Objects[3])
	}
}

func TestDecodeJSONStreamAndLists(t *testing.T) {
	d := newDecoder(t)
	for _, tc := range []struct {
		name, input string
		want        []string // "Kind name source"
	}{
		{"a stream of JSON objects is one document each",
			`{"apiVersion":"v1","kind":"Secret","metadata":{"name":"a"}}
			{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"b"}}`,
			[]string{"Secret a in.json (document 1)", "ConfigMap b in.json (document 2)"}},
		{"the items of a List are numbered",
			`{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"v1","kind":"Secret","metadata":{"name":"a"}},{"apiVersion":"v1","kind":"Secret","metadata":{"name":"b"}}]}`,
			[]string{"Secret a in.json (document 1, item 1)", "Secret b in.json (document 1, item 2)"}},
		{"the items of a SecretList may leave out their kind",
			"apiVersion: v1\nkind: SecretList\nitems:\n- metadata: {name: a}\n",
			[]string{"Secret a in.json:1 (document 1, item 1)"}},
		{"an empty List holds nothing", "apiVersion: v1\nkind: List\nitems: []\n", nil},
		{"a byte order mark is dropped", "\xef\xbb\xbf{\"apiVersion\":\"v1\",\"kind\":\"Secret\",\"metadata\":{\"name\":\"a\"}}",
			[]string{"Secret a in.json (document 1)"}},
		{"an empty stream holds nothing", "\n\n  \n", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := d.Decode("in.json", strings.NewReader(tc.input))
			if err := res.Err(); err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, o := range res.Objects {
				got = append(got, o.Kind+" "+o.Name+" "+o.Source.String())
			}
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
}

func TestDecodeErrorsNameFileDocumentAndProblem(t *testing.T) {
	d := newDecoder(t)
	secret := "apiVersion: v1\nkind: Secret\nmetadata:\n  name: ok\n"
	for _, tc := range []struct {
		name, input string
		want        string
		decoded     int
	}{
		{"broken YAML names its document and line, and the others still decode",
			secret + "---\n" + secret + "---\napiVersion: v1\nkind: Secret\nmetadata: [name: x\n---\n" + secret,
			"in.yaml:11 (document 3): invalid YAML", 3},
		{"a missing kind is named", "apiVersion: v1\nmetadata:\n  name: x\n", "in.yaml:1 (document 1): missing kind", 0},
		{"a missing apiVersion is named", "kind: Secret\n", "in.yaml:1 (document 1): missing apiVersion", 0},
		{"an unknown field is refused, as kubectl's strict validation does",
			"apiVersion: v1\nkind: Secret\nmetadata:\n  name: x\n  namesapce: gloo-mesh\n", `in.yaml:1 (document 1): Secret "x": strict decoding error: unknown field "metadata.namesapce"`, 0},
		{"a duplicate field is refused", "apiVersion: v1\nkind: Secret\nkind: Secret\n", `in.yaml:1 (document 1): invalid YAML`, 0},
		{"data that is not base64 is refused", "apiVersion: v1\nkind: Secret\nmetadata: {name: x}\ndata:\n  tls.crt: '!!!'\n", `Secret "x": `, 0},
		{"a version of a checked kind this build does not read is named with the one to use",
			"apiVersion: cert-manager.io/v1alpha2\nkind: Certificate\nmetadata: {name: c}\n", "apiVersion cert-manager.io/v1alpha2 is not one this build reads: use cert-manager.io/v1", 0},
		{"a document that is not a map is refused", "just a string\n", "in.yaml:1 (document 1): not an object", 0},
		{"a List inside a List is refused",
			`{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"v1","kind":"List","items":[]}]}`, "in.yaml (document 1, item 1): is a List inside a List", 0},
		{"items that are not a list are refused", "apiVersion: v1\nkind: List\nitems: 3\n", "in.yaml:1 (document 1): List: items is not a list", 0},
		{"broken JSON stops the stream at its document",
			`{"apiVersion":"v1","kind":"Secret","metadata":{"name":"a"}} {"apiVersion": `, "in.yaml (document 2): invalid JSON, stopped here", 1},
		{"a line longer than the bound stops the stream",
			secret + "---\nx: " + strings.Repeat("a", manifest.MaxDocumentBytes+1) + "\n", "in.yaml:6 (document 2): failed to read, stopped here: line 6 is longer than", 1},
		{"a document larger than the bound is refused, and the next one read",
			"apiVersion: v1\nkind: Secret\ndata:\n" + strings.Repeat("  k"+strings.Repeat("a", 1000)+": eA==\n", manifest.MaxDocumentBytes/1000) + "---\n" + secret,
			"in.yaml:1 (document 1): larger than", 1},
		{"a JSON object larger than the bound is refused",
			`{"apiVersion":"v1","kind":"Secret","metadata":{"name":"` + strings.Repeat("a", manifest.MaxDocumentBytes+1) + `"}}`, "in.yaml (document 1): larger than", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := d.Decode("in.yaml", strings.NewReader(tc.input))
			if len(res.Errors) != 1 {
				t.Fatalf("errors = %v, want one containing %q", res.Errors, tc.want)
			}
			if got := res.Errors[0].Error(); !strings.Contains(got, tc.want) {
				t.Errorf("error %q does not contain %q", got, tc.want)
			}
			if n := decodedCount(res); n != tc.decoded {
				t.Errorf("%d objects decoded, want %d", n, tc.decoded)
			}
		})
	}
}

func decodedCount(res *manifest.Result) int {
	n := 0
	for _, o := range res.Objects {
		if o.Decoded != nil {
			n++
		}
	}
	return n
}

func TestDecodeFileNamesAFileThatCannotBeOpened(t *testing.T) {
	res := newDecoder(t).DecodeFile("does/not/exist.yaml")
	if err := res.Err(); err == nil || err.Error() != "does/not/exist.yaml: failed to open: no such file or directory" {
		t.Errorf("error = %v", err)
	}
}

// FuzzDecode: the decoder must never panic, and every error it returns
// names the stream.
func FuzzDecode(f *testing.F) {
	for _, seed := range []string{
		stream,
		`{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"v1","kind":"Secret","metadata":{"name":"a"},"data":{"k":"eA=="}}]}`,
		"apiVersion: v1\nkind: SecretList\nitems:\n- metadata: {name: a}\n  stringData: {k: v}\n",
		"apiVersion: meshrelay.dev/v1alpha1\nkind: KubernetesCluster\nmetadata: {name: a}\nspec: {clusterDomain: 3}\n",
		"---\n- a\n---\n&a [*a]\n",
		"\xef\xbb\xbf{} {",
		"%YAML 1.2\n---\nkind: Secret\n",
	} {
		f.Add([]byte(seed))
	}
	d := newDecoder(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		res := d.Decode("fuzz", bytes.NewReader(data))
		for _, err := range res.Errors {
			if !strings.HasPrefix(err.Error(), "fuzz") {
				t.Errorf("error %q does not name the stream", err)
			}
		}
		for _, o := range res.Objects {
			if o.Source.Document < 1 {
				t.Errorf("object %+v has no document number", o)
			}
		}
	})
}
