package e2e

import (
	"context"
	"slices"
	"testing"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/meshrelay/meshrelay/internal/localmesh"
	"github.com/meshrelay/meshrelay/internal/testenv"
)

// webhookCertManagerSecret is the secret cert-manager writes relay-webhook's
// serving certificate into, as manifests/webhook/cert-manager names it.
const webhookCertManagerSecret = "relay-webhook-cert-manager-tls"

// TestHelmChartWebhookCertificateFromCertManager renders the chart for a
// management and a workload install with webhook.certManager.enabled off
// and on. Off, relay-webhook makes its own serving certificate: no
// Certificate or Issuer, no mounted secret, no inject-ca-from annotation,
// and the Role and ClusterRole that let it write its secret and caBundle.
// On, a Certificate from a self-signed Issuer writes
// relay-webhook-cert-manager-tls, the Deployment mounts it and serves it
// (--certificates=files), both webhook configurations carry the CA
// injector's annotation, and those rights are gone. An issuerRef of one's
// own takes the self-signed Issuer's place. hack/chartdiff checks that the
// objects are those of manifests/webhook/cert-manager; this test says what
// they must do.
func TestHelmChartWebhookCertificateFromCertManager(t *testing.T) {
	helm := helmBinary(t)
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	render := func(t *testing.T, args ...string) []*unstructured.Unstructured {
		t.Helper()
		out := runHelm(ctx, t, helm, root, append([]string{"template", "meshrelay", "charts/meshrelay", "--namespace", "gloo-mesh"}, args...)...)
		objs, err := localmesh.Objects(out)
		if err != nil {
			t.Fatal(err)
		}
		return objs
	}
	has := func(objs []*unstructured.Unstructured, kind, name string) bool {
		return slices.ContainsFunc(objs, func(o *unstructured.Unstructured) bool { return o.GetKind() == kind && o.GetName() == name })
	}
	webhookPod := func(t *testing.T, objs []*unstructured.Unstructured) corev1.PodSpec {
		t.Helper()
		return typed[appsv1.Deployment](t, find(t, objs, "Deployment", "relay-webhook")).Spec.Template.Spec
	}
	// rights are the objects that let relay-webhook keep its own serving
	// certificate and write caBundle, which cert-manager does in their place.
	rights := [][2]string{
		{"Role", "relay-webhook-serving-certificate"}, {"RoleBinding", "relay-webhook-serving-certificate"},
		{"ClusterRole", "meshrelay:relay-webhook"}, {"ClusterRoleBinding", "meshrelay:relay-webhook"},
	}
	configurations := [][2]string{{"ValidatingWebhookConfiguration", "meshrelay-validating"}, {"MutatingWebhookConfiguration", "meshrelay-mutating"}}
	installs := map[string][]string{
		"management": nil,
		"workload":   append([]string{"--set", "cluster=cluster-1"}, workloadSet...),
	}

	for name, install := range installs {
		t.Run(name+": off by default, relay-webhook keeps its own serving certificate and writes caBundle", func(t *testing.T) {
			objs := render(t, install...)
			for _, kind := range []string{"Certificate", "Issuer"} {
				for _, o := range objs {
					if o.GetKind() == kind {
						t.Errorf("the default install renders %s %s", kind, o.GetName())
					}
				}
			}
			pod := webhookPod(t, objs)
			if args := pod.Containers[0].Args; slices.Contains(args, "--certificates=files") {
				t.Errorf("relay-webhook args %q serve files, want its own certificate (no --certificates)", args)
			}
			if len(pod.Volumes) != 0 || len(pod.Containers[0].VolumeMounts) != 0 {
				t.Errorf("relay-webhook mounts %v at %v, want nothing", pod.Volumes, pod.Containers[0].VolumeMounts)
			}
			for _, c := range configurations {
				if v, ok := find(t, objs, c[0], c[1]).GetAnnotations()[cmapi.WantInjectAnnotation]; ok {
					t.Errorf("%s %s has %s=%s, want relay-webhook to write its caBundle", c[0], c[1], cmapi.WantInjectAnnotation, v)
				}
			}
			for _, r := range rights {
				if !has(objs, r[0], r[1]) {
					t.Errorf("the default install lacks %s %s, which relay-webhook needs to keep its certificate", r[0], r[1])
				}
			}
		})

		t.Run(name+": webhook.certManager.enabled has cert-manager issue, inject and renew it", func(t *testing.T) {
			objs := render(t, append(slices.Clone(install), "--set", "webhook.certManager.enabled=true")...)
			cert := typed[cmapi.Certificate](t, find(t, objs, "Certificate", "relay-webhook"))
			if cert.Namespace != "meshrelay-system" || cert.Spec.SecretName != webhookCertManagerSecret {
				t.Errorf("Certificate %s/relay-webhook writes %q, want meshrelay-system/%s", cert.Namespace, cert.Spec.SecretName, webhookCertManagerSecret)
			}
			if want := []string{"relay-webhook.meshrelay-system.svc", "relay-webhook.meshrelay-system.svc.cluster.local"}; !slices.Equal(cert.Spec.DNSNames, want) {
				t.Errorf("Certificate DNS names %q, want the Service's %q", cert.Spec.DNSNames, want)
			}
			if !slices.Contains(cert.Spec.Usages, cmapi.UsageServerAuth) {
				t.Errorf("Certificate usages %q lack server auth", cert.Spec.Usages)
			}
			if ref := cert.Spec.IssuerRef; ref.Name != "relay-webhook-selfsigned" || ref.Kind != "Issuer" {
				t.Errorf("Certificate issuerRef %+v, want the chart's self-signed Issuer", ref)
			}
			if issuer := typed[cmapi.Issuer](t, find(t, objs, "Issuer", "relay-webhook-selfsigned")); issuer.Namespace != "meshrelay-system" || issuer.Spec.SelfSigned == nil {
				t.Errorf("Issuer %s/relay-webhook-selfsigned is not self-signed in meshrelay-system: %+v", issuer.Namespace, issuer.Spec)
			}

			pod := webhookPod(t, objs)
			args := pod.Containers[0].Args
			for _, want := range []string{"--certificates=files", "--cert-dir=/etc/relay-webhook/tls"} {
				if !slices.Contains(args, want) {
					t.Errorf("relay-webhook args %q lack %s", args, want)
				}
			}
			if v := pod.Volumes; len(v) != 1 || v[0].Secret == nil || v[0].Secret.SecretName != webhookCertManagerSecret {
				t.Errorf("relay-webhook volumes %+v, want one of secret %s", v, webhookCertManagerSecret)
			} else if m := pod.Containers[0].VolumeMounts; len(m) != 1 || m[0].Name != v[0].Name || m[0].MountPath != "/etc/relay-webhook/tls" || !m[0].ReadOnly {
				t.Errorf("relay-webhook mounts %+v, want %s read-only at /etc/relay-webhook/tls", m, v[0].Name)
			}

			for _, c := range configurations {
				if got := find(t, objs, c[0], c[1]).GetAnnotations()[cmapi.WantInjectAnnotation]; got != "meshrelay-system/relay-webhook" {
					t.Errorf("%s %s has %s=%q, want meshrelay-system/relay-webhook", c[0], c[1], cmapi.WantInjectAnnotation, got)
				}
			}
			for _, r := range rights {
				if has(objs, r[0], r[1]) {
					t.Errorf("with cert-manager the install still renders %s %s, which relay-webhook no longer needs", r[0], r[1])
				}
			}
		})
	}

	t.Run("an issuerRef of one's own signs the certificate in place of the self-signed Issuer", func(t *testing.T) {
		objs := render(t, "--set", "webhook.certManager.enabled=true",
			"--set", "webhook.certManager.issuerRef.name=platform-ca", "--set", "webhook.certManager.issuerRef.kind=ClusterIssuer")
		if has(objs, "Issuer", "relay-webhook-selfsigned") {
			t.Error("the self-signed Issuer is rendered beside an issuerRef of one's own")
		}
		ref := typed[cmapi.Certificate](t, find(t, objs, "Certificate", "relay-webhook")).Spec.IssuerRef
		if ref.Name != "platform-ca" || ref.Kind != "ClusterIssuer" || ref.Group != "cert-manager.io" {
			t.Errorf("Certificate issuerRef %+v, want ClusterIssuer platform-ca of cert-manager.io", ref)
		}
	})

	t.Run("helm lint passes with it on", func(t *testing.T) {
		runHelm(ctx, t, helm, root, "lint", "--strict", "charts/meshrelay", "--set", "webhook.certManager.enabled=true")
	})
}
