package localmesh

import (
	"bytes"
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/meshrelay/meshrelay/internal/scheme"
	"github.com/meshrelay/meshrelay/internal/testenv"
	meshv1alpha1 "github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/pkg/pki"
)

// trustBundleDeployment runs sh as an agent whose trust bundle is a
// projected volume that only its environment names, as the agent
// Deployment and relay-webhook's injector give it.
const trustBundleDeployment = `apiVersion: v1
kind: Namespace
metadata: {name: gloo-mesh}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: relay-agent, namespace: gloo-mesh}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: relay-agent, namespace: gloo-mesh}
spec:
  selector: {matchLabels: {app: relay-agent}}
  template:
    metadata: {labels: {app: relay-agent}}
    spec:
      serviceAccountName: relay-agent
      containers:
        - name: relay-agent
          image: ghcr.io/meshrelay/meshrelay:test
          command: [/sh, -c, 'trap "exit 0" TERM; while :; do sleep 0.1; done']
          env:
            - {name: MESHRELAY_TRUST_BUNDLE_DIR, value: /etc/meshrelay/trust-bundle}
          volumeMounts:
            - {name: relay-trust-bundle, mountPath: /etc/meshrelay/trust-bundle, readOnly: true}
            - {name: unnamed, mountPath: /etc/unnamed}
      volumes:
        - name: relay-trust-bundle
          projected:
            sources:
              - secret:
                  name: relay-root-tls-secret
                  items: [{key: ca.crt, path: root-ca.crt}]
                  optional: true
              - clusterTrustBundle:
                  signerName: meshrelay.dev/relay-root
                  labelSelector: {matchLabels: {meshrelay.dev/relay-namespace: gloo-mesh}}
                  path: bundle.pem
                  optional: true
        - name: unnamed
          emptyDir: {}
`

func TestPodOfProjectedVolumes(t *testing.T) {
	t.Run("a projected volume only the environment names is mounted, and its variable points at the local folder", func(t *testing.T) {
		p := podOf(t, trustBundleDeployment, "relay-agent")
		if len(p.Mounts) != 1 || p.Mounts[0].Kind != "Projected" || p.Mounts[0].Path != "/etc/meshrelay/trust-bundle" || len(p.Mounts[0].Projected.Sources) != 2 {
			t.Fatalf("mounts %+v, want the trust bundle's projected volume alone", p.Mounts)
		}
		env := rewriteMount(p.Env, "/etc/meshrelay/trust-bundle", "/tmp/v")
		if envValueOf(env, config.EnvTrustBundleDir) != "/tmp/v" {
			t.Errorf("rewritten env %v", env)
		}
	})
	t.Run("a projected source a local process cannot be given is refused with its volume named", func(t *testing.T) {
		stream := strings.Replace(trustBundleDeployment, "              - secret:\n", "              - downwardAPI: {items: [{path: name, fieldRef: {fieldPath: metadata.name}}]}\n              - secret:\n", 1)
		objs, err := Objects(stream)
		if err != nil {
			t.Fatal(err)
		}
		_, err = PodOf(objs, "relay-agent", "pod-0")
		if want := "projected volume relay-trust-bundle: source 0 is neither a secret nor a clusterTrustBundle"; err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v, want one containing %q", err, want)
		}
	})
}

// roots returns n new root certificates named root-0, root-1, ...
func roots(t *testing.T, n int) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	for i := range n {
		r, err := pki.NewRootCA(pki.Options{CommonName: fmt.Sprintf("root-%d", i), TTL: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, r.Cert)
	}
	return out
}

func bundle(name, signer string, labels map[string]string, certs ...*x509.Certificate) certificatesv1.ClusterTrustBundle {
	return certificatesv1.ClusterTrustBundle{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Spec:       certificatesv1.ClusterTrustBundleSpec{SignerName: signer, TrustBundle: string(pki.EncodeCertificates(certs...))},
	}
}

// sortedPEM is certs once each in DER order, as the projection writes them.
func sortedPEM(certs ...*x509.Certificate) []byte {
	slices.SortFunc(certs, func(a, b *x509.Certificate) int { return bytes.Compare(a.Raw, b.Raw) })
	certs = slices.CompactFunc(certs, func(a, b *x509.Certificate) bool { return a.Equal(b) })
	return pki.EncodeCertificates(certs...)
}

func TestProjectedFilesAreWhatTheKubeletWrites(t *testing.T) {
	r := roots(t, 3)
	const signer, other = meshv1alpha1.TrustBundleSignerName, "example.com/other"
	mine := map[string]string{meshv1alpha1.TrustBundleLabel: "gloo-mesh"}
	s, err := scheme.Scheme()
	if err != nil {
		t.Fatal(err)
	}
	objs := []certificatesv1.ClusterTrustBundle{
		bundle("meshrelay.dev:relay-root:gloo-mesh", signer, mine, r[1], r[0]),
		bundle("meshrelay.dev:relay-root:gloo-mesh-2", signer, mine, r[0], r[2]),
		bundle("meshrelay.dev:relay-root:other-ns", signer, map[string]string{meshv1alpha1.TrustBundleLabel: "other"}, r[2]),
		bundle("example.com:other:x", other, mine, r[2]),
	}
	b := fake.NewClientBuilder().WithScheme(s).WithObjects(&corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: "gloo-mesh", Name: "root"},
		Data:       map[string][]byte{"ca.crt": []byte("roots"), "tls.key": []byte("key")},
	})
	for i := range objs {
		b = b.WithObjects(&objs[i])
	}
	c := b.Build()
	secretSource := func(name string, optional bool, items ...corev1.KeyToPath) corev1.VolumeProjection {
		return corev1.VolumeProjection{Secret: &corev1.SecretProjection{LocalObjectReference: corev1.LocalObjectReference{Name: name}, Items: items, Optional: ptr.To(optional)}}
	}
	bySigner := func(signer string, sel *metav1.LabelSelector, optional bool) corev1.VolumeProjection {
		return corev1.VolumeProjection{ClusterTrustBundle: &corev1.ClusterTrustBundleProjection{SignerName: ptr.To(signer), LabelSelector: sel, Path: "bundle.pem", Optional: ptr.To(optional)}}
	}
	byName := func(name string, optional bool) corev1.VolumeProjection {
		return corev1.VolumeProjection{ClusterTrustBundle: &corev1.ClusterTrustBundleProjection{Name: ptr.To(name), Path: "bundle.pem", Optional: ptr.To(optional)}}
	}
	for _, tc := range []struct {
		name    string
		sources []corev1.VolumeProjection
		want    map[string][]byte
		missing bool
	}{
		{"a secret's items go to their paths, and only they", []corev1.VolumeProjection{secretSource("root", false, corev1.KeyToPath{Key: "ca.crt", Path: "root-ca.crt"})},
			map[string][]byte{"root-ca.crt": []byte("roots")}, false},
		{"a secret without items gives every key", []corev1.VolumeProjection{secretSource("root", false)},
			map[string][]byte{"ca.crt": []byte("roots"), "tls.key": []byte("key")}, false},
		{"an optional secret that does not exist gives nothing", []corev1.VolumeProjection{secretSource("absent", true)}, map[string][]byte{}, false},
		{"an optional item whose key the secret lacks is left out", []corev1.VolumeProjection{secretSource("root", true, corev1.KeyToPath{Key: "tls.crt", Path: "x"})}, map[string][]byte{}, false},
		{"a required secret that does not exist is waited for", []corev1.VolumeProjection{secretSource("absent", false)}, nil, true},
		{"a required item whose key the secret lacks is waited for", []corev1.VolumeProjection{secretSource("root", false, corev1.KeyToPath{Key: "tls.crt", Path: "x"})}, nil, true},
		{"the bundles of the signer with the labels, each certificate once, in DER order",
			[]corev1.VolumeProjection{bySigner(signer, &metav1.LabelSelector{MatchLabels: mine}, false)},
			map[string][]byte{"bundle.pem": sortedPEM(r[0], r[1], r[2])}, false},
		{"an empty selector selects every bundle of the signer",
			[]corev1.VolumeProjection{bySigner(signer, &metav1.LabelSelector{}, false)}, map[string][]byte{"bundle.pem": sortedPEM(r[0], r[1], r[2])}, false},
		{"no selector selects none: an empty file when optional",
			[]corev1.VolumeProjection{bySigner(signer, nil, true)}, map[string][]byte{"bundle.pem": {}}, false},
		{"a signer with no bundle: an empty file when optional",
			[]corev1.VolumeProjection{bySigner("example.com/none", &metav1.LabelSelector{}, true)}, map[string][]byte{"bundle.pem": {}}, false},
		{"a signer with no bundle is waited for when required",
			[]corev1.VolumeProjection{bySigner("example.com/none", &metav1.LabelSelector{}, false)}, nil, true},
		{"a bundle by name", []corev1.VolumeProjection{byName("example.com:other:x", false)}, map[string][]byte{"bundle.pem": sortedPEM(r[2])}, false},
		{"an optional bundle by name that does not exist: an empty file", []corev1.VolumeProjection{byName("example.com:other:y", true)}, map[string][]byte{"bundle.pem": {}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := projectedFiles(t.Context(), c, "gloo-mesh", &corev1.ProjectedVolumeSource{Sources: tc.sources})
			if tc.missing {
				if !errors.Is(err, errSourceMissing) {
					t.Fatalf("error %v, want a missing source", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("files %q, want %q", got, tc.want)
			}
			for path, want := range tc.want {
				if g, ok := got[path]; !ok || !bytes.Equal(g, want) {
					t.Errorf("%s = %q, want %q", path, g, want)
				}
			}
		})
	}
}

// TestAProjectedVolumeFollowsItsSourcesWhileTheProcessRuns starts a
// Deployment whose projected trust bundle only its environment names, on
// a local cluster: the process finds the root secret's ca.crt and the
// ClusterTrustBundle of its namespace in the folder its variable names; a
// change of the ClusterTrustBundle and the delete of the optional secret
// reach the folder while it runs; once it has stopped nothing is written.
func TestAProjectedVolumeFollowsItsSourcesWhileTheProcessRuns(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Names: []string{"workload"}})
	c := env.Clusters[0]
	ctx := t.Context()
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Fatal(err)
	}
	bins := t.TempDir()
	if err := os.Symlink(sh, filepath.Join(bins, "sh")); err != nil {
		t.Fatal(err)
	}
	m := New(env, root, bins, t.TempDir())
	if err := m.InstallRendered(ctx, "workload", trustBundleDeployment, "127.0.0.1:1"); err != nil {
		t.Fatal(err)
	}
	r := roots(t, 3)
	if err := c.Client.Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: "gloo-mesh", Name: config.DefaultRootTLSSecret},
		Data:       map[string][]byte{"ca.crt": pki.EncodeCertificates(r[0])},
	}); err != nil {
		t.Fatal(err)
	}
	ctb := bundle(meshv1alpha1.TrustBundleName("gloo-mesh"), meshv1alpha1.TrustBundleSignerName, map[string]string{meshv1alpha1.TrustBundleLabel: "gloo-mesh"}, r[0])
	others := bundle(meshv1alpha1.TrustBundleName("other"), meshv1alpha1.TrustBundleSignerName, map[string]string{meshv1alpha1.TrustBundleLabel: "other"}, r[2])
	for _, b := range []*certificatesv1.ClusterTrustBundle{&ctb, &others} {
		if err := c.Client.Create(ctx, b); err != nil {
			t.Fatalf("failed to create ClusterTrustBundle %s (the local kube-apiserver must serve certificates.k8s.io/v1): %v", b.Name, err)
		}
	}

	p, pod, err := m.StartDeployment(ctx, "workload", "relay-agent", Local{Pod: "relay-agent-local-0", LogName: "relay-agent"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Kill() })
	dir := envValueOf(pod.Env, config.EnvTrustBundleDir)
	if dir == "" || !strings.HasPrefix(dir, m.Dir) {
		t.Fatalf("%s=%q, want a folder under %s", config.EnvTrustBundleDir, dir, m.Dir)
	}
	files := func() map[string]string {
		out := map[string]string{}
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			data, err := os.ReadFile(filepath.Join(dir, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			out[e.Name()] = string(data)
		}
		return out
	}
	want := func(what string, w map[string]string) {
		t.Helper()
		testenv.Eventually(t, what, 30*time.Second, func() error {
			got := files()
			if len(got) != len(w) {
				return fmt.Errorf("files %v, want %v", slices.Sorted(maps.Keys(got)), slices.Sorted(maps.Keys(w)))
			}
			for k, v := range w {
				if got[k] != v {
					return fmt.Errorf("%s differs", k)
				}
			}
			return nil
		})
	}
	want("the folder holds the root secret's ca.crt and the namespace's ClusterTrustBundle at start", map[string]string{
		"root-ca.crt": string(pki.EncodeCertificates(r[0])), "bundle.pem": string(sortedPEM(r[0])),
	})

	ctb.Spec.TrustBundle = string(pki.EncodeCertificates(r[1], r[0]))
	if err := c.Client.Update(ctx, &ctb); err != nil {
		t.Fatal(err)
	}
	want("a second root in the ClusterTrustBundle reaches bundle.pem", map[string]string{
		"root-ca.crt": string(pki.EncodeCertificates(r[0])), "bundle.pem": string(sortedPEM(r[0], r[1])),
	})
	if err := c.Client.Delete(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "gloo-mesh", Name: config.DefaultRootTLSSecret}}); err != nil {
		t.Fatal(err)
	}
	want("the optional secret's file goes with the secret", map[string]string{"bundle.pem": string(sortedPEM(r[0], r[1]))})

	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	ctb.Spec.TrustBundle = string(pki.EncodeCertificates(r[1]))
	if err := c.Client.Update(ctx, &ctb); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * projectedSync)
	if got := files()["bundle.pem"]; got != string(sortedPEM(r[0], r[1])) {
		t.Error("bundle.pem changed after the process stopped: the volume is still synced")
	}
}
