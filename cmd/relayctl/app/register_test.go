package app

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/yaml"

	"github.com/meshrelay/meshrelay/internal/relayctl/fleet"
	"github.com/meshrelay/meshrelay/internal/testenv"
	"github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
	"github.com/meshrelay/meshrelay/pkg/pki"
)

// TestRegisterCommandDryRunsThenRegistersInTheNamespaceOfDashN registers
// cluster-1 in namespace relay (-n) with --context for the management
// cluster: first as a server dry run, then for real.
func TestRegisterCommandDryRunsThenRegistersInTheNamespaceOfDashN(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Names: []string{"mgmt", "cluster-1"}})
	mgmt, remote := env.Cluster("mgmt").Client, env.Cluster("cluster-1").Client
	ctx := t.Context()
	const ns = "relay"
	if err := mgmt.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	root, err := pki.NewRootCA(pki.Options{CommonName: "root", TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if err := mgmt.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "relay-root-tls-secret"}, Data: map[string][]byte{"ca.crt": root.CertPEM()}}); err != nil {
		t.Fatal(err)
	}
	args := []string{"cluster-1", "--kubeconfig", env.Kubeconfig, "--context", "mgmt", "--remote-context", "cluster-1", "-n", ns}

	code, out, stderr := runCLI(t, "register", append(args, "--dry-run=server", "-o", "yaml")...)
	if code != 0 {
		t.Fatalf("register --dry-run=server: exit %d: %s", code, stderr)
	}
	var rep struct {
		APIVersion string       `json:"apiVersion"`
		Kind       string       `json:"kind"`
		Cluster    string       `json:"cluster"`
		DryRun     fleet.DryRun `json:"dryRun"`
		Steps      []fleet.Step `json:"steps"`
	}
	if err := yaml.UnmarshalStrict([]byte(out), &rep); err != nil {
		t.Fatalf("register -o yaml: %v\n%s", err, out)
	}
	if rep.APIVersion != reportAPIVersion || rep.Kind != kindRegister || rep.Cluster != "cluster-1" || rep.DryRun != fleet.DryRunServer || len(rep.Steps) != 3 {
		t.Errorf("register --dry-run=server -o yaml:\n%s\nwant a %s of 3 steps, dryRun server", out, kindRegister)
	}
	if err := mgmt.Get(ctx, types.NamespacedName{Namespace: ns, Name: "cluster-1"}, &v1alpha1.KubernetesCluster{}); !apierrors.IsNotFound(err) {
		t.Errorf("after a server dry run the KubernetesCluster: %v, want not found", err)
	}

	code, out, stderr = runCLI(t, "register", args...)
	if code != 0 {
		t.Fatalf("register: exit %d: %s", code, stderr)
	}
	for _, want := range []string{
		"cluster-1 (workload): secret relay/relay-root-tls-secret created\n",
		"mgmt (management): KubernetesCluster relay/cluster-1 created\n",
		"cluster-1 (workload): secret relay/relay-identity-token-secret created\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("register does not say %q:\n%s", want, out)
		}
	}
	var token corev1.Secret
	if err := remote.Get(ctx, types.NamespacedName{Namespace: ns, Name: "relay-identity-token-secret"}, &token); err != nil {
		t.Errorf("register did not write the token into -n %s of cluster-1: %v", ns, err)
	}

	code, _, stderr = runCLI(t, "register", append(args, "--dry-run")...)
	if code != 0 || !strings.Contains(stderr, "--dry-run without a value is deprecated: use --dry-run=client") {
		t.Errorf("register --dry-run: exit %d, stderr %q; want 0 and the note that --dry-run=client replaces it", code, stderr)
	}
}
