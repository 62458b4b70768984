package backup

import (
	"context"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshrelay/meshrelay/internal/testenv"
	meshv1alpha1 "github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/pkg/pki"
	"github.com/meshrelay/meshrelay/pkg/relaysecret"
)

// testTrustRoots: a RootTrustPolicy whose root relay-server generates has
// that root (root-trust.<policy>) in the backup, and restore creates it
// again; a policy whose root is the user's own secret adds nothing. Then
// the product documentation's own commands for that root (download root-cert.pem and
// key.pem, recreate with kubectl create secret tls) run as printed, and
// the secret they make holds the same root, usable as a root of trust.
func testTrustRoots(ctx context.Context, t *testing.T, env *testenv.Env, c client.Client) {
	ns := newNamespace(ctx, t, c)
	orig := createRelaySecrets(ctx, t, c, ns)
	root, err := pki.NewRootCA(pki.Options{CommonName: "meshrelay Istio root gloo-mesh", TTL: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := root.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	policy := func(name string, mgmt meshv1alpha1.MgmtServerCa) {
		t.Helper()
		p := &meshv1alpha1.RootTrustPolicy{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec:       meshv1alpha1.RootTrustPolicySpec{Config: meshv1alpha1.RootTrustPolicyConfig{MgmtServerCa: mgmt}},
		}
		if err := c.Create(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	policy("gloo-mesh", meshv1alpha1.MgmtServerCa{Generated: &meshv1alpha1.GeneratedRoot{}})
	policy("own", meshv1alpha1.MgmtServerCa{SecretRef: &meshv1alpha1.SecretReference{Name: "my-istio-root"}})
	generated := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: relaysecret.TrustRootName("gloo-mesh"), Labels: map[string]string{meshv1alpha1.RootTrustPolicyKey: "gloo-mesh"}},
		Type:       corev1.SecretTypeOpaque,
		Data:       map[string][]byte{relaysecret.KeyTrustRootCert: root.CAPEM(), relaysecret.KeyTrustRootKey: keyPEM},
	}
	own := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "my-istio-root"}, Data: generated.Data}
	for _, s := range []*corev1.Secret{generated, own} {
		if err := c.Create(ctx, s); err != nil {
			t.Fatal(err)
		}
	}

	dir := filepath.Join(t.TempDir(), "backup")
	res, err := Backup(ctx, c, BackupOptions{Namespace: ns, Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	want := allOf(orig, ActionSaved)
	want[config.DefaultClientTLSSecret] = ActionMissing
	want[generated.Name] = ActionSaved
	wantActions(t, res, want)
	checkMode(t, fileName(dir, generated.Name), 0o600)

	deleteAll(ctx, t, c, []*corev1.Secret{generated})
	res, err = Restore(ctx, c, RestoreOptions{Namespace: ns, Dir: dir, DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	want = allOf(orig, ActionUnchanged)
	want[generated.Name] = ActionWouldCreate
	wantActions(t, res, want)
	res, err = Restore(ctx, c, RestoreOptions{Namespace: ns, Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	want[generated.Name] = ActionCreated
	wantActions(t, res, want)
	got := get(ctx, t, c, ns, generated.Name)
	if !maps.EqualFunc(got.Data, generated.Data, slices.Equal) || !maps.Equal(got.Labels, generated.Labels) {
		t.Fatalf("restored %s: labels %v, data keys %v; want the saved root", got.Name, got.Labels, slices.Sorted(maps.Keys(got.Data)))
	}

	// The documentation's "download the Istio root signing certificate from
	// each RootTrustPolicy" and its recreate command, as printed; only the
	// namespace and the context differ.
	kubectl, err := exec.LookPath(env.KubectlCmd(ctx).Path)
	if err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	run := func(script string) {
		t.Helper()
		cmd := exec.CommandContext(ctx, "bash", "-euo", "pipefail", "-c", strings.ReplaceAll(script, "-n gloo-mesh", "-n "+ns))
		cmd.Dir = work
		cmd.Env = append(os.Environ(), "KUBECONFIG="+env.Kubeconfig, "MGMT_CONTEXT=mgmt", "PATH="+filepath.Dir(kubectl)+":"+os.Getenv("PATH"))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s\n%v: %s", script, err, out)
		}
	}
	run(`ROOT_TRUST_POLICY=gloo-mesh
SECRET_NAME=root-trust.$ROOT_TRUST_POLICY
mkdir $SECRET_NAME

kubectl get secret -n gloo-mesh --context $MGMT_CONTEXT -o jsonpath='{.data.root-cert\.pem}' $SECRET_NAME | base64 --decode > $SECRET_NAME/ca.crt
kubectl get secret -n gloo-mesh --context $MGMT_CONTEXT -o jsonpath='{.data.key\.pem}' $SECRET_NAME | base64 --decode > $SECRET_NAME/tls.key
`)
	deleteAll(ctx, t, c, []*corev1.Secret{got})
	run(`SECRET_NAME=root-trust.gloo-mesh
kubectl -n gloo-mesh --context $MGMT_CONTEXT create secret tls $SECRET_NAME \
  --cert=$SECRET_NAME/ca.crt \
  --key=$SECRET_NAME/tls.key
`)
	recreated := get(ctx, t, c, ns, generated.Name)
	m, r := relaysecret.Validate(relaysecret.TrustRoot, recreated.Data, "", relaysecret.Context{})
	if m == nil {
		t.Fatalf("the recreated %s is not a usable root of trust: %v", recreated.Name, r.Err())
	}
	if !m.Cert.Equal(root.Cert) {
		t.Fatalf("the recreated %s holds %q, not the saved root", recreated.Name, m.Cert.Subject.CommonName)
	}
}
