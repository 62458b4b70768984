package app

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/meshrelay/meshrelay/internal/command"
	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/pkg/pki"
	"github.com/meshrelay/meshrelay/pkg/relaysecret"
)

const year = 365 * 24 * time.Hour

// relayPKI is a root, a signing intermediate under it, and leaves it
// issues, as relay-server makes them.
type relayPKI struct {
	root, signing *pki.Certified
}

func newRelayPKI(t *testing.T) *relayPKI {
	t.Helper()
	root, err := pki.NewRootCA(pki.Options{CommonName: "relay-root", TTL: 10 * year})
	if err != nil {
		t.Fatal(err)
	}
	signing, err := root.NewIntermediateCA(pki.Options{CommonName: "relay-signing", TTL: 5 * year})
	if err != nil {
		t.Fatal(err)
	}
	return &relayPKI{root: root, signing: signing}
}

func (p *relayPKI) client(t *testing.T, cluster string) *pki.Certified {
	t.Helper()
	c, err := p.signing.IssueClient(pki.Options{DNSNames: []string{cluster}, TTL: year})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (p *relayPKI) server(t *testing.T) *pki.Certified {
	t.Helper()
	c, err := p.signing.IssueServer(pki.Options{DNSNames: []string{config.DefaultAuthority}, TTL: year})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// secretYAML is a secret of c with ca.crt, without a namespace (validate
// puts it in --namespace).
func secretYAML(t *testing.T, name string, c *pki.Certified, ca []byte) string {
	t.Helper()
	key, err := c.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	return toYAML(t, &corev1.Secret{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Type:       corev1.SecretTypeTLS,
		Data:       map[string][]byte{relaysecret.KeyTLSCert: c.CertPEM(), relaysecret.KeyTLSKey: key, relaysecret.KeyCACert: ca},
	})
}

// rootYAML is relay-root-tls-secret as a workload cluster holds it: the
// root's certificate without its key (validate warns where a workload
// cluster holds the root key).
func (p *relayPKI) rootYAML(t *testing.T) string {
	return toYAML(t, &corev1.Secret{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{Name: config.DefaultRootTLSSecret},
		Data:       map[string][]byte{relaysecret.KeyCACert: p.root.CAPEM()},
	})
}

func tokenYAML(t *testing.T, token string) string {
	return toYAML(t, &corev1.Secret{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{Name: config.DefaultTokenSecret},
		StringData: map[string]string{config.DefaultTokenKey: token},
	})
}

func toYAML(t *testing.T, obj any) string {
	t.Helper()
	b, err := yaml.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func stream(docs ...string) string { return strings.Join(docs, "---\n") }

// runValidate runs relayctl validate with args and stdin, returning the
// exit status, stdout and stderr.
func runValidate(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	cmd := newCommandAs("relayctl")
	var stdout, stderr bytes.Buffer
	cmd.SetIn(strings.NewReader(stdin))
	cmd.SetOut(&stdout)
	code := command.Run(t.Context(), cmd, append([]string{"validate"}, args...), &stderr)
	return code, stdout.String(), stderr.String()
}

// wantContains checks that got holds every want, runs of spaces counting
// as one: table columns are as wide as their widest cell.
func wantContains(t *testing.T, what, got string, want ...string) {
	t.Helper()
	spaces := regexp.MustCompile(` {2,}`)
	for _, w := range want {
		if !strings.Contains(spaces.ReplaceAllString(got, " "), spaces.ReplaceAllString(w, " ")) {
			t.Errorf("%s does not contain %q:\n%s", what, w, got)
		}
	}
}

func TestValidateChecksSecretsTogetherFromStdin(t *testing.T) {
	f := newRelayPKI(t)
	other := newRelayPKI(t)
	ca := f.root.CAPEM()
	good := []string{
		f.rootYAML(t),
		secretYAML(t, config.DefaultSigningTLSSecret, f.signing, ca),
		secretYAML(t, config.DefaultServerTLSSecret, f.server(t), ca),
		secretYAML(t, config.DefaultClientTLSSecret, f.client(t, "cluster-1"), ca),
		tokenYAML(t, strings.Repeat("t", 43)),
	}
	for _, tc := range []struct {
		name     string
		input    string
		args     []string
		wantCode int
		want     []string
	}{
		{"a good set of secrets passes", stream(good...), nil, 0, []string{
			"OK       Secret gloo-mesh/relay-root-tls-secret  stdin:1 (document 1)",
			"OK       Secret gloo-mesh/relay-tls-signing-secret",
			"OK       Secret gloo-mesh/relay-server-tls-secret",
			"OK       Secret gloo-mesh/relay-client-tls-secret",
			"OK       Secret gloo-mesh/relay-identity-token-secret",
			"5 checked: 5 admitted, 0 denied, 0 with warnings; 0 skipped; 0 input errors",
		}},
		{"a client secret with a wrong SAN is denied with the webhook's message",
			stream(f.rootYAML(t), secretYAML(t, config.DefaultClientTLSSecret, f.client(t, "cluster-2"), ca)), nil, 1, []string{
				"DENIED   Secret gloo-mesh/relay-client-tls-secret  stdin:",
				`data[tls.crt]: client certificate is for cluster "cluster-2", not this cluster "cluster-1"`,
				`issue it with DNS name "cluster-1"`,
			}},
		{"a client chain to the root secret beside it passes",
			stream(secretYAML(t, config.DefaultClientTLSSecret, f.client(t, "cluster-1"), ca), f.rootYAML(t)), nil, 0, []string{
				"OK       Secret gloo-mesh/relay-client-tls-secret", "2 checked: 2 admitted"}},
		{"a client chain that does not verify to the root secret beside it is denied",
			stream(secretYAML(t, config.DefaultClientTLSSecret, other.client(t, "cluster-1"), other.root.CAPEM()), f.rootYAML(t)), nil, 1, []string{
				"DENIED   Secret gloo-mesh/relay-client-tls-secret",
				"data[tls.crt]: does not chain to relay-root-tls-secret's ca.crt"}},
		{"the same client chain alone passes: the root came from the input",
			secretYAML(t, config.DefaultClientTLSSecret, other.client(t, "cluster-1"), other.root.CAPEM()), nil, 0, []string{
				"OK       Secret gloo-mesh/relay-client-tls-secret"}},
		{"a short token is admitted with a warning",
			tokenYAML(t, "short"), nil, 0, []string{"WARNING  Secret gloo-mesh/relay-identity-token-secret", "warning: data[token] is 5 bytes",
				"1 checked: 1 admitted, 0 denied, 1 with warnings"}},
		{"--namespace moves the relay secrets",
			stream(f.rootYAML(t), secretYAML(t, config.DefaultClientTLSSecret, f.client(t, "cluster-1"), ca)), []string{"--namespace", "relay"}, 0, []string{
				"OK       Secret relay/relay-root-tls-secret", "OK       Secret relay/relay-client-tls-secret", "2 checked: 2 admitted"}},
		{"a relay secret in another namespace is skipped, saying why",
			strings.Replace(f.rootYAML(t), "name: relay-root-tls-secret", "name: relay-root-tls-secret\n  namespace: default", 1), nil, 0, []string{
				"SKIPPED  Secret default/relay-root-tls-secret", "not a relay secret of namespace gloo-mesh (--namespace)", "0 checked"}},
		{"other kinds are counted, not listed",
			"apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: relay-agent}\n", nil, 0, []string{"0 checked: 0 admitted, 0 denied, 0 with warnings; 1 skipped"}},
		{"a KubernetesCluster whose name is not a DNS label is denied",
			"apiVersion: meshrelay.dev/v1alpha1\nkind: KubernetesCluster\nmetadata: {name: cluster_1}\n", nil, 1, []string{
				"DENIED   KubernetesCluster gloo-mesh/cluster_1", "metadata.name:", "contains an underscore"}},
		{"a client Certificate for another cluster is denied",
			"apiVersion: cert-manager.io/v1\nkind: Certificate\nmetadata: {name: c}\nspec:\n  secretName: relay-client-tls-secret\n  dnsNames: [cluster-2]\n  usages: [client auth]\n  issuerRef: {name: relay}\n",
			nil, 1, []string{"DENIED   Certificate gloo-mesh/c", `spec.dnsNames: [cluster-2] does not hold this cluster's name "cluster-1"`}},
		{"a secret defined twice is an input error naming both places",
			stream(f.rootYAML(t), f.rootYAML(t)), nil, 1, []string{
				"ERROR    stdin:", "(document 2): Secret gloo-mesh/relay-root-tls-secret is also defined at stdin:1 (document 1)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"-f", "-", "--cluster-name", "cluster-1"}, tc.args...)
			code, stdout, stderr := runValidate(t, tc.input, args...)
			if code != tc.wantCode {
				t.Errorf("exit status = %d, want %d; stdout:\n%s\nstderr: %s", code, tc.wantCode, stdout, stderr)
			}
			wantContains(t, "stdout", stdout, tc.want...)
			if tc.wantCode != 0 && !strings.HasPrefix(stderr, "Error: ") {
				t.Errorf("stderr = %q, want the reason for the exit status", stderr)
			}
		})
	}
}

func TestValidateWalksFolders(t *testing.T) {
	f := newRelayPKI(t)
	ca := f.root.CAPEM()
	dir := t.TempDir()
	files := map[string]string{
		"base/root.yaml":                        f.rootYAML(t),
		"overlays/cluster-1/client.yml":         secretYAML(t, config.DefaultClientTLSSecret, f.client(t, "cluster-1"), ca),
		"overlays/cluster-1/list.json":          `{"apiVersion":"v1","kind":"List","items":[` + mustJSON(t, tokenYAML(t, strings.Repeat("t", 43))) + `]}`,
		"overlays/cluster-1/kustomization.yaml": "resources: [client.yml]\n",
		".github/workflows/ci.yml":              "on: push\n",
		"README.md":                             "# not a manifest\n",
	}
	for name, content := range files {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	code, stdout, stderr := runValidate(t, "", "-f", dir, "--cluster-name", "cluster-1")
	if code != 0 {
		t.Fatalf("exit status %d; stdout:\n%s\nstderr: %s", code, stdout, stderr)
	}
	wantContains(t, "stdout", stdout,
		"OK       Secret gloo-mesh/relay-root-tls-secret  "+filepath.Join(dir, "base/root.yaml")+":1 (document 1)",
		"OK       Secret gloo-mesh/relay-client-tls-secret  "+filepath.Join(dir, "overlays/cluster-1/client.yml"),
		"OK       Secret gloo-mesh/relay-identity-token-secret  "+filepath.Join(dir, "overlays/cluster-1/list.json")+" (document 1, item 1)",
		"3 checked: 3 admitted")

	t.Run("a wrong SAN found in the folder is denied", func(t *testing.T) {
		code, stdout, _ := runValidate(t, "", "-f", dir, "--cluster-name", "cluster-2")
		if code != 1 {
			t.Errorf("exit status %d, want 1", code)
		}
		wantContains(t, "stdout", stdout, `client certificate is for cluster "cluster-1", not this cluster "cluster-2"`)
	})
	t.Run("a file and stdin together are one input", func(t *testing.T) {
		other := newRelayPKI(t)
		client := secretYAML(t, config.DefaultClientTLSSecret, other.client(t, "cluster-1"), other.root.CAPEM())
		code, stdout, _ := runValidate(t, client, "-f", filepath.Join(dir, "base/root.yaml"), "-f", "-", "--cluster-name", "cluster-1")
		if code != 1 {
			t.Errorf("exit status %d, want 1: a client of another PKI beside the root of the file", code)
		}
		wantContains(t, "stdout", stdout, "DENIED   Secret gloo-mesh/relay-client-tls-secret  stdin:1 (document 1)",
			"does not chain to relay-root-tls-secret's ca.crt")
	})
}

func mustJSON(t *testing.T, y string) string {
	t.Helper()
	b, err := yaml.YAMLToJSON([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestValidateNamesBrokenInput(t *testing.T) {
	f := newRelayPKI(t)
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	content := stream(f.rootYAML(t), "apiVersion: v1\nkind: Secret\nmetadata: [oops\n", tokenYAML(t, strings.Repeat("t", 43)))
	if err := os.WriteFile(bad, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	line := strings.Count(f.rootYAML(t), "\n") + 2
	code, stdout, stderr := runValidate(t, "", "-f", bad, "-f", filepath.Join(dir, "missing.yaml"))
	if code != 1 {
		t.Errorf("exit status %d, want 1", code)
	}
	wantContains(t, "stdout", stdout,
		"ERROR    "+bad+":"+strconv.Itoa(line)+" (document 2): invalid YAML",
		"ERROR    "+filepath.Join(dir, "missing.yaml")+": failed to read: no such file or directory",
		"OK       Secret gloo-mesh/relay-root-tls-secret",
		"OK       Secret gloo-mesh/relay-identity-token-secret  "+bad,
		"2 checked: 2 admitted, 0 denied, 0 with warnings; 0 skipped; 2 input errors")
	wantContains(t, "stderr", stderr, "Error: 2 input errors")
}

func TestValidateReportsParse(t *testing.T) {
	f := newRelayPKI(t)
	ca := f.root.CAPEM()
	input := stream(f.rootYAML(t), secretYAML(t, config.DefaultClientTLSSecret, f.client(t, "cluster-2"), ca),
		"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n", "kind: Secret\n")
	for _, format := range []string{"json", "yaml"} {
		t.Run(format, func(t *testing.T) {
			code, stdout, _ := runValidate(t, input, "-f", "-", "--cluster-name", "cluster-1", "-o", format)
			if code != 1 {
				t.Errorf("exit status %d, want 1", code)
			}
			var rep struct {
				APIVersion string `json:"apiVersion"`
				Kind       string `json:"kind"`
				validateReport
			}
			unmarshal := json.Unmarshal
			if format == "yaml" {
				unmarshal = func(b []byte, v any) error { return yaml.UnmarshalStrict(b, v) }
			} else {
				dec := json.NewDecoder(strings.NewReader(stdout))
				dec.DisallowUnknownFields()
				unmarshal = func(_ []byte, v any) error { return dec.Decode(v) }
			}
			if err := unmarshal([]byte(stdout), &rep); err != nil {
				t.Fatalf("the %s report does not parse: %v\n%s", format, err, stdout)
			}
			if rep.APIVersion != reportAPIVersion || rep.Kind != kindValidation {
				t.Errorf("the %s report is apiVersion %q kind %q, want %s %s", format, rep.APIVersion, rep.Kind, reportAPIVersion, kindValidation)
			}
			want := reportSummary{Checked: 2, Admitted: 1, Denied: 1, Skipped: 1, Errors: 1}
			if rep.Summary != want {
				t.Errorf("summary = %+v, want %+v", rep.Summary, want)
			}
			if len(rep.Objects) != 3 {
				t.Fatalf("objects = %+v, want 3", rep.Objects)
			}
			denied := rep.Objects[1]
			if denied.Result != resultDenied || denied.Name != config.DefaultClientTLSSecret || denied.Namespace != config.DefaultNamespace ||
				denied.File != "stdin" || denied.Document != 2 || len(denied.Denials) != 1 || !strings.Contains(denied.Denials[0], `for cluster "cluster-2"`) {
				t.Errorf("denied object = %+v", denied)
			}
			if cm := rep.Objects[2]; cm.Result != resultSkipped || cm.Kind != "ConfigMap" || cm.Reason == "" {
				t.Errorf("ConfigMap = %+v, want skipped with a reason", cm)
			}
			if len(rep.Errors) != 1 || rep.Errors[0].Document != 4 || !strings.Contains(rep.Errors[0].Error, "missing apiVersion") {
				t.Errorf("errors = %+v", rep.Errors)
			}
		})
	}
}

func TestValidateRefusesBadFlags(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"-f is required", nil, 2, `required flag(s) "filename" not set`},
		{"an unknown output format is named", []string{"-f", "-", "-o", "table"}, 2, `unknown output format "table": use json, yaml`},
		{"a cluster name with an underscore is refused", []string{"-f", "-", "--cluster-name", "cluster_1"}, 2, "invalid webhook settings: cluster: Invalid value"},
		{"stdin given twice is an input error", []string{"-f", "-", "-f", "-"}, 1, "Error: 1 input error"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := runValidate(t, "", tc.args...)
			if code != tc.code {
				t.Errorf("exit status %d, want %d", code, tc.code)
			}
			wantContains(t, "stderr", stderr, tc.want)
		})
	}
}

func TestValidateHelpNamesTheWebhookFlags(t *testing.T) {
	cmd := newCommandAs("relayctl")
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetArgs([]string{"validate", "--help"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	wantContains(t, "help", out.String(), "-f, --filename", "--cluster-name", "--namespace string", "-o, --output", "--client-tls-secret string")
	if testing.Verbose() {
		_, _ = io.WriteString(os.Stdout, out.String())
	}
}
