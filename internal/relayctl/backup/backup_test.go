package backup

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshrelay/meshrelay/internal/testenv"
	"github.com/meshrelay/meshrelay/pkg/config"
)

// TestAgainstAnAPIServer runs every backup and restore case against one
// local API server, each in its own namespace and folder.
func TestAgainstAnAPIServer(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Names: []string{"mgmt"}})
	c := env.Clusters[0].Client
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()

	t.Run("a RootTrustPolicy's generated root is backed up and restored, also by the documented commands", func(t *testing.T) {
		testTrustRoots(ctx, t, env, c)
	})

	t.Run("backup, delete, restore gives back identical secrets", func(t *testing.T) {
		ns := newNamespace(ctx, t, c)
		orig := createRelaySecrets(ctx, t, c, ns)
		dir := filepath.Join(t.TempDir(), "backup")

		res, err := Backup(ctx, c, BackupOptions{Namespace: ns, Dir: dir})
		if err != nil {
			t.Fatal(err)
		}
		wantActions(t, res, map[string]string{
			config.DefaultRootTLSSecret: ActionSaved, config.DefaultSigningTLSSecret: ActionSaved,
			config.DefaultServerTLSSecret: ActionSaved, config.DefaultTokenSecret: ActionSaved,
			config.DefaultClientTLSSecret: ActionMissing,
		})
		checkMode(t, dir, 0o700)
		for _, s := range orig {
			path := fileName(dir, s.Name)
			checkMode(t, path, 0o600)
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			for _, field := range []string{"resourceVersion", "uid", "creationTimestamp", "managedFields", "ownerReferences", lastApplied} {
				if strings.Contains(string(data), field) {
					t.Errorf("%s holds %s:\n%s", path, field, data)
				}
			}
		}
		if _, err := os.Stat(fileName(dir, config.DefaultClientTLSSecret)); err == nil {
			t.Error("a file was written for the missing client secret")
		}

		deleteAll(ctx, t, c, orig)
		res, err = Restore(ctx, c, RestoreOptions{Namespace: ns, Dir: dir})
		if err != nil {
			t.Fatal(err)
		}
		wantActions(t, res, allOf(orig, ActionCreated))
		for _, want := range orig {
			got := get(ctx, t, c, ns, want.Name)
			if !maps.EqualFunc(got.Data, want.Data, slices.Equal) || got.Type != want.Type || !maps.Equal(got.Labels, want.Labels) {
				t.Errorf("restored %s: type %s labels %v data keys %v, want type %s labels %v data keys %v",
					want.Name, got.Type, got.Labels, slices.Sorted(maps.Keys(got.Data)), want.Type, want.Labels, slices.Sorted(maps.Keys(want.Data)))
			}
			wantAnn := maps.Clone(want.Annotations)
			delete(wantAnn, lastApplied)
			if !maps.Equal(got.Annotations, wantAnn) {
				t.Errorf("restored %s: annotations %v, want %v", want.Name, got.Annotations, wantAnn)
			}
			if len(got.OwnerReferences) > 0 {
				t.Errorf("restored %s has owner references %v", want.Name, got.OwnerReferences)
			}
		}

		res, err = Restore(ctx, c, RestoreOptions{Namespace: ns, Dir: dir})
		if err != nil {
			t.Fatal(err)
		}
		wantActions(t, res, allOf(orig, ActionUnchanged))
	})

	t.Run("a secret whose data differs is refused naming its keys, and replaced with force", func(t *testing.T) {
		ns := newNamespace(ctx, t, c)
		orig := createRelaySecrets(ctx, t, c, ns)
		dir := t.TempDir()
		if _, err := Backup(ctx, c, BackupOptions{Namespace: ns, Dir: dir}); err != nil {
			t.Fatal(err)
		}
		server := get(ctx, t, c, ns, config.DefaultServerTLSSecret)
		server.Data["tls.crt"] = []byte("new-certificate-value")
		server.Data["extra"] = []byte("extra-value")
		delete(server.Data, "ca.crt")
		if err := c.Update(ctx, server); err != nil {
			t.Fatal(err)
		}
		token := get(ctx, t, c, ns, config.DefaultTokenSecret)
		if err := c.Delete(ctx, token); err != nil {
			t.Fatal(err)
		}

		res, err := Restore(ctx, c, RestoreOptions{Namespace: ns, Dir: dir})
		if err != nil {
			t.Fatal(err)
		}
		wantActions(t, res, map[string]string{
			config.DefaultRootTLSSecret: ActionUnchanged, config.DefaultSigningTLSSecret: ActionUnchanged,
			config.DefaultServerTLSSecret: ActionRefused, config.DefaultTokenSecret: ActionSkipped,
		})
		if n := Refused(res); n != 1 {
			t.Errorf("Refused = %d, want 1", n)
		}
		detail := find(t, res, config.DefaultServerTLSSecret).Detail
		for _, want := range []string{"tls.crt differs", "extra is only in the cluster", "ca.crt is only in the backup", "--force"} {
			if !strings.Contains(detail, want) {
				t.Errorf("refusal %q does not say %q", detail, want)
			}
		}
		for _, r := range res {
			for _, secret := range []string{"new-certificate-value", "extra-value", "server-key", string(orig[2].Data["tls.crt"])} {
				if strings.Contains(r.Detail, secret) {
					t.Errorf("result %+v prints secret data %q", r, secret)
				}
			}
		}
		if _, err := getErr(ctx, c, ns, config.DefaultTokenSecret); !apierrors.IsNotFound(err) {
			t.Errorf("the token was written although a secret was refused: %v", err)
		}
		if got := get(ctx, t, c, ns, config.DefaultServerTLSSecret); string(got.Data["tls.crt"]) != "new-certificate-value" {
			t.Error("the refused secret was changed")
		}

		res, err = Restore(ctx, c, RestoreOptions{Namespace: ns, Dir: dir, Force: true})
		if err != nil {
			t.Fatal(err)
		}
		wantActions(t, res, map[string]string{
			config.DefaultRootTLSSecret: ActionUnchanged, config.DefaultSigningTLSSecret: ActionUnchanged,
			config.DefaultServerTLSSecret: ActionUpdated, config.DefaultTokenSecret: ActionCreated,
		})
		if got := get(ctx, t, c, ns, config.DefaultServerTLSSecret); !maps.EqualFunc(got.Data, orig[2].Data, slices.Equal) {
			t.Errorf("after --force the server secret has keys %v, want the backup's %v", slices.Sorted(maps.Keys(got.Data)), slices.Sorted(maps.Keys(orig[2].Data)))
		}
	})

	t.Run("backup refuses to overwrite files, naming them, unless forced", func(t *testing.T) {
		ns := newNamespace(ctx, t, c)
		createRelaySecrets(ctx, t, c, ns)
		dir := t.TempDir()
		if _, err := Backup(ctx, c, BackupOptions{Namespace: ns, Dir: dir}); err != nil {
			t.Fatal(err)
		}
		rootFile := fileName(dir, config.DefaultRootTLSSecret)
		writeTestFile(t, dir, filepath.Base(rootFile), "edited by hand")
		_, err := Backup(ctx, c, BackupOptions{Namespace: ns, Dir: dir})
		if err == nil {
			t.Fatal("a second backup into the same folder returned no error")
		}
		for _, want := range []string{rootFile, fileName(dir, config.DefaultTokenSecret), "--force"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not name %q", err, want)
			}
		}
		if data, _ := os.ReadFile(rootFile); string(data) != "edited by hand" {
			t.Error("the refused backup overwrote a file")
		}
		if _, err := Backup(ctx, c, BackupOptions{Namespace: ns, Dir: dir, Force: true}); err != nil {
			t.Fatal(err)
		}
		if data, _ := os.ReadFile(rootFile); !strings.Contains(string(data), "kind: Secret") {
			t.Errorf("with force the file was not replaced: %q", data)
		}
		checkMode(t, rootFile, 0o600)
		if tmp, _ := filepath.Glob(filepath.Join(dir, ".*")); len(tmp) > 0 {
			t.Errorf("temporary files left behind: %v", tmp)
		}
	})

	t.Run("backup fails when no relay secret exists", func(t *testing.T) {
		ns := newNamespace(ctx, t, c)
		dir := filepath.Join(t.TempDir(), "out")
		_, err := Backup(ctx, c, BackupOptions{Namespace: ns, Dir: dir})
		if err == nil || !strings.Contains(err.Error(), "none of the relay secrets") {
			t.Errorf("err = %v, want none of the relay secrets", err)
		}
		if _, err := os.Stat(dir); err == nil {
			t.Error("the folder was created although nothing was saved")
		}
	})

	t.Run("an invalid file stops restore before any write", func(t *testing.T) {
		ns := newNamespace(ctx, t, c)
		orig := createRelaySecrets(ctx, t, c, ns)
		dir := t.TempDir()
		if _, err := Backup(ctx, c, BackupOptions{Namespace: ns, Dir: dir}); err != nil {
			t.Fatal(err)
		}
		deleteAll(ctx, t, c, orig)
		for _, tc := range []struct{ file, content, want string }{
			{"configmap.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n", "is not a Secret"},
			{"foreign.yaml", "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db-password\n", "not a relay secret"},
			{"broken.yaml", "kind: Secret\n  name: [\n", "invalid YAML"},
		} {
			path := filepath.Join(dir, tc.file)
			writeTestFile(t, dir, tc.file, tc.content)
			res, err := Restore(ctx, c, RestoreOptions{Namespace: ns, Dir: dir, Force: true})
			if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%s: err = %v, want it to name the file and say %q", tc.file, err, tc.want)
			}
			if res != nil {
				t.Errorf("%s: results %v, want none", tc.file, res)
			}
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
		}
		var list corev1.SecretList
		if err := c.List(ctx, &list, client.InNamespace(ns)); err != nil {
			t.Fatal(err)
		}
		if len(list.Items) != 0 {
			t.Errorf("restore wrote %d secrets from a folder with an invalid file", len(list.Items))
		}
	})

	t.Run("dry run reports what would happen and writes nothing", func(t *testing.T) {
		ns := newNamespace(ctx, t, c)
		createRelaySecrets(ctx, t, c, ns)
		dir := t.TempDir()
		if _, err := Backup(ctx, c, BackupOptions{Namespace: ns, Dir: dir}); err != nil {
			t.Fatal(err)
		}
		if err := c.Delete(ctx, get(ctx, t, c, ns, config.DefaultRootTLSSecret)); err != nil {
			t.Fatal(err)
		}
		signing := get(ctx, t, c, ns, config.DefaultSigningTLSSecret)
		signing.Data["tls.key"] = []byte("rotated")
		if err := c.Update(ctx, signing); err != nil {
			t.Fatal(err)
		}
		before := get(ctx, t, c, ns, config.DefaultSigningTLSSecret).ResourceVersion

		res, err := Restore(ctx, c, RestoreOptions{Namespace: ns, Dir: dir, Force: true, DryRun: true})
		if err != nil {
			t.Fatal(err)
		}
		wantActions(t, res, map[string]string{
			config.DefaultRootTLSSecret: ActionWouldCreate, config.DefaultSigningTLSSecret: ActionWouldUpdate,
			config.DefaultServerTLSSecret: ActionUnchanged, config.DefaultTokenSecret: ActionUnchanged,
		})
		if _, err := getErr(ctx, c, ns, config.DefaultRootTLSSecret); !apierrors.IsNotFound(err) {
			t.Errorf("dry run created the root secret: %v", err)
		}
		if got := get(ctx, t, c, ns, config.DefaultSigningTLSSecret); got.ResourceVersion != before || string(got.Data["tls.key"]) != "rotated" {
			t.Error("dry run updated the signing secret")
		}
	})

	t.Run("a write the API server rejects is refused and nothing is written", func(t *testing.T) {
		ns := newNamespace(ctx, t, c)
		dir := t.TempDir()
		writeTestFile(t, dir, "token.yaml", strings.ReplaceAll(validFile, "namespace: gloo-mesh", "namespace: "+ns))
		writeTestFile(t, dir, "root.yaml", fmt.Sprintf(`apiVersion: v1
kind: Secret
metadata:
  name: relay-root-tls-secret
  namespace: %s
type: kubernetes.io/tls
data:
  ca.crt: Y2E=
`, ns))
		res, err := Restore(ctx, c, RestoreOptions{Namespace: ns, Dir: dir})
		if err != nil {
			t.Fatal(err)
		}
		wantActions(t, res, map[string]string{config.DefaultRootTLSSecret: ActionRefused, config.DefaultTokenSecret: ActionSkipped})
		if d := find(t, res, config.DefaultRootTLSSecret).Detail; !strings.Contains(d, "API server rejects it") || !strings.Contains(d, "tls.crt") {
			t.Errorf("refusal %q does not give the API server's reason", d)
		}
		if _, err := getErr(ctx, c, ns, config.DefaultTokenSecret); !apierrors.IsNotFound(err) {
			t.Errorf("the token was written although the root was refused: %v", err)
		}
	})

	t.Run("a differing type is refused even with force", func(t *testing.T) {
		ns := newNamespace(ctx, t, c)
		dir := t.TempDir()
		writeTestFile(t, dir, "token.yaml", strings.ReplaceAll(validFile, "namespace: gloo-mesh", "namespace: "+ns))
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: config.DefaultTokenSecret}, Type: "example.com/token",
			Data: map[string][]byte{"token": []byte("token")}}
		if err := c.Create(ctx, s); err != nil {
			t.Fatal(err)
		}
		res, err := Restore(ctx, c, RestoreOptions{Namespace: ns, Dir: dir, Force: true})
		if err != nil {
			t.Fatal(err)
		}
		wantActions(t, res, map[string]string{config.DefaultTokenSecret: ActionRefused})
		if d := res[0].Detail; !strings.Contains(d, "example.com/token") || !strings.Contains(d, "delete the secret") {
			t.Errorf("refusal %q does not name the types and the fix", d)
		}
	})

	t.Run("restore creates a namespace that is gone", func(t *testing.T) {
		ns := fmt.Sprintf("gone-%d", time.Now().UnixNano())
		dir := t.TempDir()
		writeTestFile(t, dir, "token.yaml", strings.ReplaceAll(validFile, "  namespace: gloo-mesh\n", ""))
		res, err := Restore(ctx, c, RestoreOptions{Namespace: ns, Dir: dir, DryRun: true})
		if err != nil {
			t.Fatal(err)
		}
		wantActions(t, res, map[string]string{config.DefaultTokenSecret: ActionWouldCreate})
		if !strings.Contains(res[0].Detail, "does not exist") {
			t.Errorf("detail %q does not say the namespace is missing", res[0].Detail)
		}
		if err := c.Get(ctx, client.ObjectKey{Name: ns}, &corev1.Namespace{}); !apierrors.IsNotFound(err) {
			t.Errorf("dry run created namespace %s: %v", ns, err)
		}
		res, err = Restore(ctx, c, RestoreOptions{Namespace: ns, Dir: dir})
		if err != nil {
			t.Fatal(err)
		}
		wantActions(t, res, map[string]string{config.DefaultTokenSecret: ActionCreated})
		if got := get(ctx, t, c, ns, config.DefaultTokenSecret); string(got.Data["token"]) != "token" {
			t.Errorf("token = %q", got.Data["token"])
		}
	})
}

// createRelaySecrets creates every relay secret but the client's, as
// relay-server leaves them, with the fields a backup leaves out.
func createRelaySecrets(ctx context.Context, t *testing.T, c client.Client, ns string) []*corev1.Secret {
	t.Helper()
	owner := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "owner"}}
	if err := c.Create(ctx, owner); err != nil {
		t.Fatal(err)
	}
	tls := func(name, prefix string) *corev1.Secret {
		return &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{
				Namespace: ns, Name: name,
				Labels:      map[string]string{"app.kubernetes.io/managed-by": "relay-server"},
				Annotations: map[string]string{"meshrelay.dev/note": name, lastApplied: `{"data":{"tls.key":"c2VjcmV0"}}`},
				OwnerReferences: []metav1.OwnerReference{{
					APIVersion: "v1", Kind: "ConfigMap", Name: owner.Name, UID: owner.UID,
				}},
			},
			Type: corev1.SecretTypeTLS,
			Data: map[string][]byte{
				"tls.crt": []byte(prefix + "-certificate"),
				"tls.key": []byte(prefix + "-key"),
				"ca.crt":  []byte("root-certificate"),
			},
		}
	}
	secrets := []*corev1.Secret{
		tls(config.DefaultRootTLSSecret, "root"),
		tls(config.DefaultSigningTLSSecret, "signing"),
		tls(config.DefaultServerTLSSecret, "server"),
		{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: config.DefaultTokenSecret},
			Data:       map[string][]byte{"token": []byte("identity-token")},
		},
	}
	for _, s := range secrets {
		if err := c.Create(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	return secrets
}

func newNamespace(ctx context.Context, t *testing.T, c client.Client) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "backup-"}}
	if err := c.Create(ctx, ns); err != nil {
		t.Fatal(err)
	}
	return ns.Name
}

func deleteAll(ctx context.Context, t *testing.T, c client.Client, secrets []*corev1.Secret) {
	t.Helper()
	for _, s := range secrets {
		if err := c.Delete(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
}

func getErr(ctx context.Context, c client.Client, ns, name string) (*corev1.Secret, error) {
	var s corev1.Secret
	err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &s)
	return &s, err
}

func get(ctx context.Context, t *testing.T, c client.Client, ns, name string) *corev1.Secret {
	t.Helper()
	s, err := getErr(ctx, c, ns, name)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func allOf(secrets []*corev1.Secret, action string) map[string]string {
	out := map[string]string{}
	for _, s := range secrets {
		out[s.Name] = action
	}
	return out
}

// wantActions checks that results hold exactly the secrets of want, each
// with its action.
func wantActions(t *testing.T, results []Result, want map[string]string) {
	t.Helper()
	got := map[string]string{}
	for _, r := range results {
		got[r.Secret] = r.Action
	}
	if !maps.Equal(got, want) {
		t.Errorf("actions = %v, want %v; results: %+v", got, want, results)
	}
}

func find(t *testing.T, results []Result, name string) Result {
	t.Helper()
	for _, r := range results {
		if r.Secret == name {
			return r
		}
	}
	t.Fatalf("no result for %s in %+v", name, results)
	return Result{}
}

func checkMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := info.Mode().Perm(); got != want {
		t.Errorf("%s has mode %o, want %o", path, got, want)
	}
}
