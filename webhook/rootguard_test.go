package webhook_test

import (
	"context"
	"crypto/x509"
	"net/http"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/meshrelay/meshrelay/internal/scheme"
	meshv1alpha1 "github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/pkg/pki"
	"github.com/meshrelay/meshrelay/pkg/relaysecret"
	"github.com/meshrelay/meshrelay/webhook"
)

// TestTheManagementClusterKeepsRootsTheFleetStillChainsTo runs the root
// guard of a management cluster's relay-webhook through kubectl: removing
// a root from relay-root-tls-secret, or deleting the secret, is refused
// while a KubernetesCluster's live client certificate chains to it, and
// admitted with meshrelay.dev/allow-root-removal=true, for a root nobody
// chains to, or one only an expired certificate chains to.
func TestTheManagementClusterKeepsRootsTheFleetStillChainsTo(t *testing.T) {
	e := startWebhookFor(t, false, "")
	const ns = config.DefaultNamespace
	now := time.Now()
	roots := map[string]*pki.Certified{}
	for _, name := range []string{"root-a", "root-b", "root-c", "root-d"} {
		r, err := pki.NewRootCA(pki.Options{CommonName: name, TTL: year, Now: now.Add(-time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		roots[name] = r
	}
	liveUntil := now.Add(2 * time.Hour).Truncate(time.Second)
	// root-a anchors cluster-1's live certificate, root-b cluster-2's,
	// root-c only cluster-3's expired one, root-d nobody's; cluster-4's
	// certificate names no root.
	e.registerCluster(t, "cluster-1", roots["root-a"].Cert, liveUntil)
	e.registerCluster(t, "cluster-2", roots["root-b"].Cert, liveUntil)
	e.registerCluster(t, "cluster-3", roots["root-c"].Cert, now.Add(-time.Minute))
	e.registerCluster(t, "cluster-4", nil, liveUntil)
	secret := func(allow bool, names ...string) string {
		return toYAML(t, rootsSecret(t, allow, names, roots))
	}

	e.mustApply(t, secret(false, "root-a", "root-b", "root-c", "root-d"))
	t.Run("a root nobody chains to is removed, with a warning about the certificates whose root is not recorded", func(t *testing.T) {
		stderr := e.mustApply(t, secret(false, "root-a", "root-b", "root-c"))
		if !strings.Contains(stderr, "1 cluster(s) hold a live client certificate whose root relay-server has not recorded") {
			t.Errorf("kubectl printed %q, want the warning about cluster-4's unrecorded root", stderr)
		}
	})
	t.Run("a root only an expired certificate chains to is removed", func(t *testing.T) {
		e.mustApply(t, secret(false, "root-a", "root-b"))
	})
	t.Run("a root that anchors a live certificate is kept, and the denial names it, the cluster, its expiry and the override", func(t *testing.T) {
		e.wantDenied(t, secret(false, "root-b"), nil,
			`data[ca.crt]: this update removes root "root-a" (sha256 `+pki.Fingerprint(roots["root-a"].Cert)[:12]+`…)`,
			"the live client certificates of 1 cluster: cluster-1 (expires "+liveUntil.UTC().Format(time.RFC3339)+") still chain to it",
			"relayctl rotate status", meshv1alpha1.AllowRootRemovalAnnotation+"=true")
		e.wantDenied(t, secret(false, "root-b"), nil, "cluster-1")
		if _, stderr, _ := e.apply(secret(false, "root-b")); strings.Contains(stderr, "cluster-2") {
			t.Errorf("the denial names cluster-2, whose root stays: %s", stderr)
		}
	})
	t.Run("deleting the secret is refused for each root still anchoring a live certificate", func(t *testing.T) {
		_, stderr, err := e.Kubectl(e.ctx, "", "delete", "secret", "-n", ns, config.DefaultRootTLSSecret)
		if err == nil || !strings.Contains(stderr, "denied the request") {
			t.Fatalf("delete was not denied by the webhook: %v %s", err, stderr)
		}
		for _, want := range []string{`deleting the secret removes root "root-a"`, "cluster-1 (expires", `deleting the secret removes root "root-b"`, "cluster-2 (expires"} {
			if !strings.Contains(stderr, want) {
				t.Errorf("denial %q does not contain %q", strings.TrimSpace(stderr), want)
			}
		}
		if !e.secretExists(t, ns, config.DefaultRootTLSSecret) {
			t.Fatal("the root secret is gone")
		}
	})
	t.Run("a collection delete, which names no secret in its request, is refused too", func(t *testing.T) {
		_, stderr, err := e.Kubectl(e.ctx, "", "delete", "secrets", "--all", "-n", ns)
		if err == nil || !strings.Contains(stderr, "denied the request") {
			t.Errorf("kubectl delete secrets --all was not denied by the webhook: %v %s", err, stderr)
		}
		if !e.secretExists(t, ns, config.DefaultRootTLSSecret) {
			t.Fatal("the root secret is gone")
		}
	})
	t.Run("with the override annotation the root is removed, and the warning names the stranded cluster", func(t *testing.T) {
		stderr := e.mustApply(t, secret(true, "root-b"))
		if !strings.Contains(stderr, "admitted by "+meshv1alpha1.AllowRootRemovalAnnotation+"=true") || !strings.Contains(stderr, "cluster-1") {
			t.Errorf("kubectl printed %q, want a warning naming cluster-1", stderr)
		}
	})
	t.Run("a secret annotated with the override is deleted", func(t *testing.T) {
		if _, stderr, err := e.Kubectl(e.ctx, "", "delete", "secret", "-n", ns, config.DefaultRootTLSSecret); err != nil {
			t.Fatalf("delete was refused: %v %s", err, stderr)
		}
		if e.secretExists(t, ns, config.DefaultRootTLSSecret) {
			t.Error("the root secret is still there")
		}
	})
}

// TestTheRootGuardCountsTheCertificateInUseAndNoRevokedOne: a root that
// only the certificate a cluster's streams presented chains to (its newest,
// issued but not stored by its agent, chains to another) is kept; a root
// that only a revoked certificate chains to is removed.
func TestTheRootGuardCountsTheCertificateInUseAndNoRevokedOne(t *testing.T) {
	e := startWebhookFor(t, false, "")
	now := time.Now()
	roots := map[string]*pki.Certified{}
	for _, name := range []string{"root-new", "root-old", "root-revoked"} {
		r, err := pki.NewRootCA(pki.Options{CommonName: name, TTL: year, Now: now.Add(-time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		roots[name] = r
	}
	liveUntil := now.Add(2 * time.Hour).Truncate(time.Second)
	summary := func(serial string, root string, issued time.Time) *meshv1alpha1.CertificateSummary {
		return &meshv1alpha1.CertificateSummary{Serial: serial, NotBefore: metav1.NewTime(issued), NotAfter: metav1.NewTime(liveUntil),
			RootSHA256: pki.Fingerprint(roots[root].Cert)}
	}
	// cluster-1's newest certificate chains to root-new, the one its
	// streams on replica a presented to root-old. cluster-2 was revoked
	// after its certificate under root-revoked was issued.
	e.registerClusterStatus(t, "cluster-1", nil, meshv1alpha1.KubernetesClusterStatus{
		ClientCertificate: summary("2", "root-new", now.Add(-time.Minute).Truncate(time.Second)),
		Replicas: []meshv1alpha1.ReplicaStatus{{Replica: "a", PushStreams: 1, PullStreams: 1,
			StreamCertificate: summary("1", "root-old", now.Add(-time.Hour).Truncate(time.Second))}},
	})
	cut := metav1.NewTime(now.Truncate(time.Second))
	e.registerClusterStatus(t, "cluster-2", &meshv1alpha1.Revocation{IssuedBefore: &cut}, meshv1alpha1.KubernetesClusterStatus{
		ClientCertificate: summary("3", "root-revoked", now.Add(-time.Hour).Truncate(time.Second)),
	})
	secret := func(names ...string) string { return toYAML(t, rootsSecret(t, false, names, roots)) }
	e.mustApply(t, secret("root-new", "root-old", "root-revoked"))

	t.Run("a root the streams' certificate chains to is kept", func(t *testing.T) {
		e.wantDenied(t, secret("root-new", "root-revoked"), nil, `removes root "root-old"`, "cluster-1 (expires")
	})
	t.Run("a root only a revoked certificate chains to is removed", func(t *testing.T) {
		e.mustApply(t, secret("root-new", "root-old"))
	})
}

// registerClusterStatus creates KubernetesCluster name, revoked as
// revocation says, with status st, as relay-server writes it.
func (e *webhookEnv) registerClusterStatus(t *testing.T, name string, revocation *meshv1alpha1.Revocation, st meshv1alpha1.KubernetesClusterStatus) {
	t.Helper()
	kc := &meshv1alpha1.KubernetesCluster{ObjectMeta: metav1.ObjectMeta{Namespace: config.DefaultNamespace, Name: name},
		Spec: meshv1alpha1.KubernetesClusterSpec{Revocation: revocation}}
	if err := e.cluster.Client.Create(e.ctx, kc); err != nil {
		t.Fatal(err)
	}
	kc.Status = st
	if err := e.cluster.Client.Status().Update(e.ctx, kc); err != nil {
		t.Fatal(err)
	}
}

// registerCluster creates KubernetesCluster name with a newest client
// certificate that chains to root (none recorded when nil) and expires at
// notAfter, as relay-server records it.
func (e *webhookEnv) registerCluster(t *testing.T, name string, root *x509.Certificate, notAfter time.Time) {
	t.Helper()
	kc := &meshv1alpha1.KubernetesCluster{ObjectMeta: metav1.ObjectMeta{Namespace: config.DefaultNamespace, Name: name}}
	if err := e.cluster.Client.Create(e.ctx, kc); err != nil {
		t.Fatal(err)
	}
	kc.Status.ClientCertificate = &meshv1alpha1.CertificateSummary{
		Serial: "1", NotBefore: metav1.NewTime(notAfter.Add(-24 * time.Hour)), NotAfter: metav1.NewTime(notAfter),
	}
	if root != nil {
		kc.Status.ClientCertificate.RootSHA256 = pki.Fingerprint(root)
	}
	if err := e.cluster.Client.Status().Update(e.ctx, kc); err != nil {
		t.Fatal(err)
	}
}

// rootsSecret is relay-root-tls-secret holding the named roots in ca.crt,
// annotated with the override when allow is set.
func rootsSecret(t testing.TB, allow bool, names []string, roots map[string]*pki.Certified) *corev1.Secret {
	t.Helper()
	var certs []*x509.Certificate
	for _, n := range names {
		certs = append(certs, roots[n].Cert)
	}
	sec := &corev1.Secret{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{Namespace: config.DefaultNamespace, Name: config.DefaultRootTLSSecret},
		Type:       corev1.SecretTypeOpaque,
		Data:       map[string][]byte{relaysecret.KeyCACert: pki.EncodeCertificates(certs...)},
	}
	if allow {
		sec.Annotations = map[string]string{meshv1alpha1.AllowRootRemovalAnnotation: "true"}
	}
	return sec
}

// listFailingReader reads secrets from a fake client and fails every list,
// as a KubernetesCluster cache that cannot be filled.
type listFailingReader struct{ client.Reader }

func (listFailingReader) List(context.Context, client.ObjectList, ...client.ListOption) error {
	return errUnreachable
}

// TestTheRootGuardFailsClosed: when the KubernetesClusters cannot be
// listed, a root removal is refused with the fix (a 500: nothing was
// judged), unless the override annotation is set; an update that removes
// no root does not need the list.
func TestTheRootGuardFailsClosed(t *testing.T) {
	s, err := scheme.Scheme()
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.DefaultWebhook() // no --cluster: the management cluster
	h := webhook.Handlers(&cfg, listFailingReader{fake.NewClientBuilder().WithScheme(s).Build()}, s, clocktesting.NewFakePassiveClock(time.Now()).Now)[webhook.SecretsPath]
	roots := map[string]*pki.Certified{}
	for _, name := range []string{"root-a", "root-b"} {
		r, err := pki.NewRootCA(pki.Options{CommonName: name, TTL: year})
		if err != nil {
			t.Fatal(err)
		}
		roots[name] = r
	}
	both := rootsSecret(t, false, []string{"root-a", "root-b"}, roots)
	const ns = config.DefaultNamespace

	resp := review(t, h, admissionv1.Update, ns, rootsSecret(t, false, []string{"root-b"}, roots), both)
	if resp.Allowed || resp.Result.Code != http.StatusInternalServerError ||
		!strings.Contains(resp.Result.Message, "failed to list the KubernetesClusters of gloo-mesh") ||
		!strings.Contains(resp.Result.Message, "annotate the secret "+meshv1alpha1.AllowRootRemovalAnnotation+"=true") {
		t.Errorf("removal without the list: %+v, want a 500 naming the list and the annotation", resp.Result)
	}
	resp = review(t, h, admissionv1.Delete, ns, nil, both)
	if resp.Allowed || resp.Result.Code != http.StatusInternalServerError {
		t.Errorf("delete without the list: %+v, want a 500", resp.Result)
	}
	resp = review(t, h, admissionv1.Update, ns, rootsSecret(t, true, []string{"root-b"}, roots), both)
	if !resp.Allowed || len(resp.Warnings) != 1 || !strings.Contains(resp.Warnings[0], "without checking the fleet") {
		t.Errorf("removal with the annotation: allowed %v, warnings %q, want admitted with a warning", resp.Allowed, resp.Warnings)
	}
	resp = review(t, h, admissionv1.Update, ns, both, rootsSecret(t, false, []string{"root-b"}, roots))
	if !resp.Allowed {
		t.Errorf("adding a root: %+v, want admitted without the list", resp.Result)
	}

	workload := config.DefaultWebhook()
	workload.Cluster = cluster
	h = webhook.Handlers(&workload, listFailingReader{fake.NewClientBuilder().WithScheme(s).Build()}, s, time.Now)[webhook.SecretsPath]
	if resp := review(t, h, admissionv1.Delete, ns, nil, both); !resp.Allowed {
		t.Errorf("delete on a workload cluster: %+v, want allowed: the fleet is the management cluster's", resp.Result)
	}
}
