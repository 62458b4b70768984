package trustbundle

import (
	"context"
	"crypto/x509"
	"slices"
	"strings"
	"testing"

	certificatesv1 "k8s.io/api/certificates/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/meshrelay/meshrelay/internal/scheme"
	"github.com/meshrelay/meshrelay/internal/testenv"
	"github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
	"github.com/meshrelay/meshrelay/pkg/pki"
)

// TestPublishSkipsAClusterWithoutTheAPI runs against a kube-apiserver
// with ClusterTrustBundle turned off, as in a cluster before Kubernetes
// 1.37: Publish reports nothing published and no error. A failure of
// another kind is an error, and a bundle that is not PEM certificates is
// refused before any call.
func TestPublishSkipsAClusterWithoutTheAPI(t *testing.T) {
	if testing.Short() {
		t.Skip("needs a local kube-apiserver, which -short (make test-unit) does not start: run make test")
	}
	s, err := scheme.Scheme()
	if err != nil {
		t.Fatal(err)
	}
	assets, err := testenv.AssetsDir()
	if err != nil {
		t.Fatal(err)
	}
	env := &envtest.Environment{BinaryAssetsDirectory: assets, Scheme: s}
	env.ControlPlane.GetAPIServer().Configure().Set("runtime-config", "certificates.k8s.io/v1/clustertrustbundles=false")
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("failed to start kube-apiserver without ClusterTrustBundle: %v", err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Errorf("failed to stop kube-apiserver: %v", err)
		}
	})
	c, err := client.New(cfg, client.Options{Scheme: s})
	if err != nil {
		t.Fatal(err)
	}
	if servesClusterTrustBundles(t, cfg) {
		t.Fatal("kube-apiserver still serves clustertrustbundles with the API turned off: this test would prove nothing")
	}
	bundle := pki.EncodeCertificates(newRoot(t, "a"))
	if published, err := Publish(t.Context(), c, "gloo-mesh", bundle); published || err != nil {
		t.Errorf("Publish: %v, %v; want false, nil", published, err)
	}

	ctbs := schema.GroupResource{Group: certificatesv1.GroupName, Resource: "clustertrustbundles"}
	t.Run("another failure is an error", func(t *testing.T) {
		c := fake.NewClientBuilder().WithScheme(s).WithInterceptorFuncs(interceptor.Funcs{
			Create: func(context.Context, client.WithWatch, client.Object, ...client.CreateOption) error {
				return apierrors.NewForbidden(ctbs, "x", nil)
			},
		}).Build()
		if published, err := Publish(t.Context(), c, "gloo-mesh", bundle); published || !apierrors.IsForbidden(err) {
			t.Errorf("Publish: %v, %v; want false and the Forbidden error", published, err)
		}
	})
	t.Run("a bundle that is not PEM certificates is refused before any call", func(t *testing.T) {
		if _, err := Publish(t.Context(), c, "gloo-mesh", []byte("junk")); err == nil || !strings.Contains(err.Error(), "trust bundle") {
			t.Errorf("Publish: %v, want an error about the trust bundle", err)
		}
	})
}

// TestPublishCreatesAndUpdatesTheClusterTrustBundle runs against the
// kube-apiserver the tests use, which must serve ClusterTrustBundle in
// certificates.k8s.io/v1 (Kubernetes 1.37): the bundle is created with its
// signer and label, left alone when unchanged, and updated when the roots
// change, and the API server admits what Publish writes.
func TestPublishCreatesAndUpdatesTheClusterTrustBundle(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Names: []string{"trust"}})
	c := env.Cluster("trust")
	if !servesClusterTrustBundles(t, c.Config) {
		t.Fatalf("the kube-apiserver of internal/testenv does not serve clustertrustbundles in %s: the local clusters must run Kubernetes 1.37 or later (make print-assets names the binaries)",
			certificatesv1.SchemeGroupVersion)
	}

	a, b := newRoot(t, "a"), newRoot(t, "b")
	name := v1alpha1.TrustBundleName("gloo-mesh")
	get := func() *certificatesv1.ClusterTrustBundle {
		t.Helper()
		var ctb certificatesv1.ClusterTrustBundle
		if err := c.Client.Get(t.Context(), client.ObjectKey{Name: name}, &ctb); err != nil {
			t.Fatal(err)
		}
		return &ctb
	}
	publish := func(bundle []byte) {
		t.Helper()
		published, err := Publish(t.Context(), c.Client, "gloo-mesh", bundle)
		if !published || err != nil {
			t.Fatalf("Publish: %v, %v", published, err)
		}
	}
	roots := func(ctb *certificatesv1.ClusterTrustBundle) []*x509.Certificate {
		t.Helper()
		certs, err := pki.DecodeCertificates([]byte(ctb.Spec.TrustBundle))
		if err != nil {
			t.Fatal(err)
		}
		return certs
	}

	// A bundle as a secret may hold it: text before a block, a copy.
	publish(append([]byte("# relay roots\n"), pki.EncodeCertificates(a, a)...))
	created := get()
	if created.Spec.SignerName != v1alpha1.TrustBundleSignerName || created.Labels[v1alpha1.TrustBundleLabel] != "gloo-mesh" {
		t.Errorf("created with signer %q and labels %v", created.Spec.SignerName, created.Labels)
	}
	if got := roots(created); Fingerprint(got) != Fingerprint([]*x509.Certificate{a}) || len(got) != 1 {
		t.Errorf("created with %v, want root a once", names(got))
	}

	publish(pki.EncodeCertificates(a))
	if again := get(); again.ResourceVersion != created.ResourceVersion {
		t.Errorf("an unchanged bundle was written again (resourceVersion %s, then %s)", created.ResourceVersion, again.ResourceVersion)
	}

	publish(pki.EncodeCertificates(a, b))
	if got := roots(get()); Fingerprint(got) != Fingerprint([]*x509.Certificate{a, b}) {
		t.Errorf("after adding b: %v, want a and b", names(got))
	}
	publish(pki.EncodeCertificates(b))
	if got := roots(get()); Fingerprint(got) != Fingerprint([]*x509.Certificate{b}) {
		t.Errorf("after retiring a: %v, want b", names(got))
	}
}

// servesClusterTrustBundles asks the API server's discovery whether it
// serves clustertrustbundles in certificates.k8s.io/v1.
func servesClusterTrustBundles(t *testing.T, cfg *rest.Config) bool {
	t.Helper()
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	list, err := dc.ServerResourcesForGroupVersion(certificatesv1.SchemeGroupVersion.String())
	if err != nil {
		return false
	}
	return slices.ContainsFunc(list.APIResources, func(r metav1.APIResource) bool { return r.Name == "clustertrustbundles" })
}
