package agent

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshrelay/meshrelay/internal/testenv"
	meshv1alpha1 "github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
)

// TestAutoRestartPodsRestartsOnlyOptedInNamespaces runs restartIstio as
// relay-agent's ServiceAccount with the istio-federated-trust component's
// RBAC as users apply it: istiod and the workloads of an injected namespace
// opted in with a RoleBinding restart; an injected namespace without one
// is left alone without failing the rest, and so is a namespace without
// injection.
func TestAutoRestartPodsRestartsOnlyOptedInNamespaces(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Names: []string{"workload"}})
	c := env.Clusters[0]
	ctx := t.Context()
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	namespaces := map[string]map[string]string{
		"gloo-mesh": nil, "istio-system": nil, "plain": nil,
		"bookinfo": {injectionLabel: "enabled"},
		"legacy":   {revisionLabel: "1-24"},
	}
	for name, labels := range namespaces {
		if err := c.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}); err != nil {
			t.Fatal(err)
		}
	}
	env.MustKubectl(ctx, t, "", "--context", c.Name, "apply", "-f", filepath.Join(root, "manifests", "components", "istio-federated-trust", "rbac.yaml"))
	// The opt-in, as docs/federated-trust.md tells users to write it.
	env.MustKubectl(ctx, t, "", "--context", c.Name, "-n", "bookinfo", "create", "rolebinding", RestartClusterRole,
		"--clusterrole="+RestartClusterRole, "--serviceaccount=gloo-mesh:relay-agent")
	workloads := []types.NamespacedName{{Namespace: "istio-system", Name: "istiod"}, {Namespace: "bookinfo", Name: "reviews"}, {Namespace: "legacy", Name: "ratings"}, {Namespace: "plain", Name: "other"}}
	for _, w := range workloads {
		labels := map[string]string{"app": w.Name}
		d := &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Namespace: w.Namespace, Name: w.Name, Labels: labels},
			Spec: appsv1.DeploymentSpec{
				Selector: &metav1.LabelSelector{MatchLabels: labels},
				Template: corev1.PodTemplateSpec{
					ObjectMeta: metav1.ObjectMeta{Labels: labels},
					Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.k8s.io/pause:3.10"}}},
				},
			},
		}
		if err := c.Client.Create(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	asAgent := rest.CopyConfig(c.Config)
	asAgent.Impersonate = rest.ImpersonationConfig{
		UserName: "system:serviceaccount:gloo-mesh:relay-agent",
		Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:gloo-mesh", "system:authenticated"},
	}
	agent, err := client.New(asAgent, client.Options{Scheme: c.Client.Scheme()})
	if err != nil {
		t.Fatal(err)
	}

	const rev = "0123456789abcdef"
	if err := restartIstio(ctx, agent, agent, "istio-system", rev, time.Now(), testr.New(t)); err != nil {
		t.Fatalf("restartIstio: %v: a namespace that is not opted in must not fail the restart of the others", err)
	}
	for _, w := range workloads {
		var d appsv1.Deployment
		if err := c.Client.Get(ctx, w, &d); err != nil {
			t.Fatal(err)
		}
		got := d.Spec.Template.Annotations[meshv1alpha1.CACertsRevisionAnnotation]
		want := ""
		if w.Name == "istiod" || w.Name == "reviews" {
			want = rev
		}
		if got != want {
			t.Errorf("%s: cacerts revision %q, want %q", w, got, want)
		}
		if (want != "") != (d.Spec.Template.Annotations[restartedAtAnnotation] != "") {
			t.Errorf("%s: restartedAt %q", w, d.Spec.Template.Annotations[restartedAtAnnotation])
		}
	}
}
