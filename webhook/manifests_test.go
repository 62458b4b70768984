package webhook_test

import (
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/meshrelay/meshrelay/internal/testenv"
	"github.com/meshrelay/meshrelay/pkg/config"
)

// TestWebhookManifestsApply builds manifests/webhook/base and its
// cert-manager overlay with kubectl kustomize and applies both to a local
// cluster: every object is accepted by the API server, and the overlay
// switches the webhook to cert-manager's files and CA injection.
func TestWebhookManifestsApply(t *testing.T) {
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	env := testenv.Start(t, testenv.Options{
		Names:   []string{"manifests"},
		CRDDirs: []string{filepath.Join(root, "manifests", "crds"), filepath.Join(root, "hack", "crds", "cert-manager")},
	})
	c := env.Clusters[0]
	ctx := t.Context()
	if err := c.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: config.DefaultNamespace}}); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{"base", "cert-manager"} {
		t.Run(dir+" builds and applies", func(t *testing.T) {
			out, _, err := env.Kubectl(ctx, "", "kustomize", filepath.Join(root, "manifests", "webhook", dir))
			if err != nil {
				t.Fatal(err)
			}
			if _, _, err := env.Kubectl(ctx, out, "apply", "-f", "-"); err != nil {
				t.Fatal(err)
			}
		})
	}
	var d appsv1.Deployment
	if err := c.Client.Get(ctx, types.NamespacedName{Namespace: config.DefaultWebhookNamespace, Name: "relay-webhook"}, &d); err != nil {
		t.Fatal(err)
	}
	if args := strings.Join(d.Spec.Template.Spec.Containers[0].Args, " "); !strings.Contains(args, "--certificates=files") {
		t.Errorf("after the cert-manager overlay the webhook runs with %q, want --certificates=files", args)
	}
	out, _, err := env.Kubectl(ctx, "", "get", "validatingwebhookconfiguration", config.DefaultValidatingWebhook, "-o", "jsonpath={.metadata.annotations}")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "cert-manager.io/inject-ca-from") {
		t.Errorf("validating configuration annotations %s lack cert-manager.io/inject-ca-from", out)
	}
}
