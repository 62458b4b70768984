package app

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/meshrelay/meshrelay/internal/relayctl/fleet"
	"github.com/meshrelay/meshrelay/internal/testenv"
	"github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
)

// TestRevokeChecksItsArgumentsBeforeReadingAnyCluster gives revoke a
// kubeconfig that does not exist: each refusal must name the argument, so
// it came before anything was read.
func TestRevokeChecksItsArgumentsBeforeReadingAnyCluster(t *testing.T) {
	none := filepath.Join(t.TempDir(), "none")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"cluster_1", "--mgmt-context", "mgmt"}, `cluster name "cluster_1"`},
		{[]string{"cluster-1"}, "failed to load the kubeconfig for the current context"},
		{[]string{"cluster-1", "--mgmt-context", "mgmt", "--serial", "3g"}, `serial "3g" is not a certificate serial number`},
		{[]string{"cluster-1", "--mgmt-context", "mgmt", "-o", "table"}, `unknown output format "table"`},
	} {
		code, _, stderr := runCLI(t, "revoke", append(tc.args, "--kubeconfig", none)...)
		if code == 0 || !strings.Contains(stderr, tc.want) {
			t.Errorf("revoke %v: exit %d, stderr %q; want %q", tc.args, code, stderr, tc.want)
		}
	}
}

func TestRevokeCommandAgainstALocalCluster(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Names: []string{"mgmt"}})
	c := env.Clusters[0].Client
	ctx := t.Context()
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "gloo-mesh"}}); err != nil {
		t.Fatal(err)
	}
	if err := c.Create(ctx, &v1alpha1.KubernetesCluster{ObjectMeta: metav1.ObjectMeta{Namespace: "gloo-mesh", Name: "cluster-1"}}); err != nil {
		t.Fatal(err)
	}
	kube := []string{"--kubeconfig", env.Kubeconfig, "--mgmt-context", "mgmt"}

	code, out, stderr := runCLI(t, "revoke", append([]string{"cluster-1"}, kube...)...)
	if code != 0 {
		t.Fatalf("revoke: exit %d: %s", code, stderr)
	}
	var kc v1alpha1.KubernetesCluster
	if err := c.Get(ctx, types.NamespacedName{Namespace: "gloo-mesh", Name: "cluster-1"}, &kc); err != nil {
		t.Fatal(err)
	}
	if kc.Spec.Revocation == nil || kc.Spec.Revocation.IssuedBefore == nil {
		t.Fatalf("revocation %+v, want issuedBefore set", kc.Spec.Revocation)
	}
	for _, want := range []string{
		"mgmt (KubernetesCluster gloo-mesh/cluster-1): certificates issued before " + kc.Spec.Revocation.IssuedBefore.UTC().Format("2006-01-02T15:04:05Z") + " are revoked",
		"closes their streams within a second",
		"relayctl register cluster-1 --context mgmt --remote-context <its context> issues a fresh bootstrap token",
		"with which the agent bootstraps at once",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("revoke output does not say %q:\n%s", want, out)
		}
	}

	code, out, stderr = runCLI(t, "revoke", append([]string{"cluster-1", "--serial", "0A:1B", "--serial", "ff", "-o", "json"}, kube...)...)
	if code != 0 {
		t.Fatalf("revoke --serial: exit %d: %s", code, stderr)
	}
	var got struct {
		APIVersion, Kind string
		fleet.Revoked
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("revoke -o json: %v:\n%s", err, out)
	}
	if got.APIVersion != reportAPIVersion || got.Kind != kindRevoke {
		t.Errorf("revoke -o json is apiVersion %q kind %q, want %s %s", got.APIVersion, got.Kind, reportAPIVersion, kindRevoke)
	}
	if strings.Join(got.Added, ",") != "a1b,ff" || got.UID != string(kc.UID) || got.IssuedBefore == nil {
		t.Errorf("revoke -o json = %+v; want serials a1b,ff added, the UID and the earlier issuedBefore", got)
	}
}
