package app

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshrelay/meshrelay/internal/command"
	"github.com/meshrelay/meshrelay/internal/relayctl/backup"
	"github.com/meshrelay/meshrelay/internal/testenv"
	"github.com/meshrelay/meshrelay/pkg/config"
)

// runCLI runs relayctl's command sub with args as relayctl's main would
// and returns the exit status, stdout and stderr.
func runCLI(t *testing.T, sub string, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd := newCommandAs("relayctl")
	cmd.SetOut(&out)
	code := command.Run(t.Context(), cmd, append([]string{sub}, args...), &errOut)
	return code, out.String(), errOut.String()
}

func TestBackupAndRestoreCommandsAgainstALocalCluster(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Names: []string{"mgmt"}})
	c := env.Clusters[0].Client
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	ns := config.DefaultNamespace
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string]map[string][]byte{
		config.DefaultRootTLSSecret:    {"tls.crt": []byte("root-crt"), "tls.key": []byte("root-key"), "ca.crt": []byte("root-crt")},
		config.DefaultSigningTLSSecret: {"tls.crt": []byte("signing-crt"), "tls.key": []byte("signing-key"), "ca.crt": []byte("root-crt")},
		config.DefaultServerTLSSecret:  {"tls.crt": []byte("server-crt"), "tls.key": []byte("server-key"), "ca.crt": []byte("root-crt")},
	} {
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Type: corev1.SecretTypeTLS, Data: data}
		if err := c.Create(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	token := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: config.DefaultTokenSecret}, Data: map[string][]byte{"token": []byte("identity-token")}}
	if err := c.Create(ctx, token); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "relay-backup")
	kube := []string{"--kubeconfig", env.Kubeconfig, "--context", "mgmt"}

	code, out, stderr := runCLI(t, "backup", append(kube, "--out", dir)...)
	if code != 0 {
		t.Fatalf("backup: exit %d: %s", code, stderr)
	}
	for _, want := range []string{
		"ACTION    SECRET", "saved     relay-root-tls-secret", filepath.Join(dir, "relay-root-tls-secret.yaml"),
		"missing   relay-client-tls-secret", "not found in namespace gloo-mesh",
		"Saved 4 secrets of namespace gloo-mesh (context mgmt)", "private keys",
		"relayctl restore --context mgmt --namespace gloo-mesh --from " + dir,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("backup output does not say %q:\n%s", want, out)
		}
	}

	code, _, stderr = runCLI(t, "backup", append(kube, "--out", dir)...)
	if code != 2 || !strings.Contains(stderr, filepath.Join(dir, "relay-identity-token-secret.yaml")) || !strings.Contains(stderr, "--force") {
		t.Errorf("backup into a used folder: exit %d, stderr %q; want 2 (could not run) naming the files and --force", code, stderr)
	}

	code, out, stderr = runCLI(t, "backup", append(kube, "--out", dir, "--force", "-o", "json")...)
	if code != 0 {
		t.Fatalf("backup --force -o json: exit %d: %s", code, stderr)
	}
	saved := decodeItems(t, out, kindBackup)
	if len(saved) != 5 || saved[0].Secret != config.DefaultRootTLSSecret || saved[0].Action != backup.ActionSaved {
		t.Errorf("backup -o json = %+v", saved)
	}
	if !strings.Contains(stderr, "private keys") {
		t.Errorf("backup -o json leaves out the reminder on stderr: %q", stderr)
	}

	// Lose the token; the server certificate changes.
	if err := c.Delete(ctx, token); err != nil {
		t.Fatal(err)
	}
	var server corev1.Secret
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: config.DefaultServerTLSSecret}, &server); err != nil {
		t.Fatal(err)
	}
	server.Data["tls.key"] = []byte("another-server-key")
	if err := c.Update(ctx, &server); err != nil {
		t.Fatal(err)
	}

	code, out, stderr = runCLI(t, "restore", append(kube, "--from", dir, "-o", "json")...)
	if code != 1 || !strings.Contains(stderr, "1 secret refused: nothing was written") {
		t.Errorf("restore of a differing secret: exit %d, stderr %q; want 1 and the refusal", code, stderr)
	}
	results := decodeItems(t, out, kindRestore)
	for _, r := range results {
		if r.Secret == config.DefaultServerTLSSecret && (r.Action != backup.ActionRefused || !strings.Contains(r.Detail, "tls.key differs")) {
			t.Errorf("server secret: %+v, want refused naming tls.key", r)
		}
		if r.Secret == config.DefaultTokenSecret && r.Action != backup.ActionSkipped {
			t.Errorf("token secret: %+v, want skipped", r)
		}
	}
	if strings.Contains(out+stderr, "server-key") {
		t.Errorf("restore printed secret data:\n%s\n%s", out, stderr)
	}

	code, out, stderr = runCLI(t, "restore", append(kube, "--from", dir, "--force", "--dry-run")...)
	if code != 0 {
		t.Fatalf("restore --force --dry-run: exit %d: %s", code, stderr)
	}
	for _, want := range []string{"would create   relay-identity-token-secret", "would update   relay-server-tls-secret", "Dry run, nothing was written"} {
		if !strings.Contains(out, want) {
			t.Errorf("dry run output does not say %q:\n%s", want, out)
		}
	}
	if !strings.Contains(stderr, "--dry-run without a value is deprecated: use --dry-run=client") {
		t.Errorf("a bare --dry-run gives no deprecation note: %q", stderr)
	}
	if err := c.Get(ctx, client.ObjectKeyFromObject(token), &corev1.Secret{}); err == nil {
		t.Error("dry run created the token secret")
	}

	code, out, stderr = runCLI(t, "restore", append(kube, "--from", dir, "--force")...)
	if code != 0 {
		t.Fatalf("restore --force: exit %d: %s", code, stderr)
	}
	for _, want := range []string{"created", "updated", "unchanged", "Restored: namespace gloo-mesh (context mgmt): 2 unchanged, 1 updated, 1 created."} {
		if !strings.Contains(out, want) {
			t.Errorf("restore output does not say %q:\n%s", want, out)
		}
	}

	code, out, stderr = runCLI(t, "restore", append(kube, "--from", dir, "-o", "yaml")...)
	if code != 0 || strings.Count(out, "action: unchanged") != 4 {
		t.Errorf("a second restore: exit %d, stderr %q, output:\n%s\nwant 4 unchanged", code, stderr, out)
	}
}

func TestBackupCommandsCheckTheirFlagsFirst(t *testing.T) {
	for _, tc := range []struct {
		name string
		cmd  string
		args []string
		want string
	}{
		{"backup needs a folder", "backup", []string{"--context", "mgmt"}, `required flag(s) "out" not set`},
		{"restore needs a folder", "restore", []string{"--context", "mgmt"}, `required flag(s) "from" not set`},
		{"restore refuses an unknown --dry-run", "restore", []string{"--from", "x", "--dry-run=maybe"}, `invalid argument "maybe" for "--dry-run" flag: use none, client`},
		{"an unknown output format is refused before connecting", "restore",
			[]string{"--context", "mgmt", "--kubeconfig", filepath.Join(t.TempDir(), "none"), "--from", "x", "-o", "table"}, `unknown output format "table"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := runCLI(t, tc.cmd, tc.args...)
			if code != 2 || !strings.Contains(stderr, tc.want) {
				t.Errorf("exit %d, stderr %q; want 2 (could not run) and %q", code, stderr, tc.want)
			}
		})
	}
}

// decodeItems decodes a report of kind that lists backup results.
func decodeItems(t *testing.T, out, kind string) []backup.Result {
	t.Helper()
	var rep struct {
		APIVersion string          `json:"apiVersion"`
		Kind       string          `json:"kind"`
		Items      []backup.Result `json:"items"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("-o json is not a %s: %v\n%s", kind, err, out)
	}
	if rep.APIVersion != reportAPIVersion || rep.Kind != kind {
		t.Errorf("-o json is apiVersion %q kind %q, want %s %s:\n%s", rep.APIVersion, rep.Kind, reportAPIVersion, kind, out)
	}
	return rep.Items
}
