package trustbundle

import (
	"context"
	"errors"
	"fmt"

	certificatesv1 "k8s.io/api/certificates/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
	"github.com/meshrelay/meshrelay/pkg/pki"
)

// errNotServed says the cluster does not serve the ClusterTrustBundle API.
var errNotServed = errors.New("the ClusterTrustBundle API is not served")

// Publish makes the ClusterTrustBundle v1alpha1.TrustBundleName(namespace)
// hold the relay roots in bundle: signer v1alpha1.TrustBundleSignerName,
// label v1alpha1.TrustBundleLabel=namespace, creating it or updating it
// when it differs. The bundle is stored as its certificates re-encoded,
// each once and without text or headers between them, which is what the
// API server admits; so the stored bytes may differ from bundle while the
// certificates are the same.
//
// published is false, with no error, when the cluster does not serve
// ClusterTrustBundle in certificates.k8s.io/v1 (before Kubernetes 1.37, or
// with the API turned off): the caller then relies on the root secret
// alone. The client must not read ClusterTrustBundles from a cache; its
// user needs get, create and update on the bundle's name and attest on the
// signer (group certificates.k8s.io, resource signers).
func Publish(ctx context.Context, c client.Client, namespace string, bundle []byte) (published bool, err error) {
	certs, err := pki.DecodeCertificates(bundle)
	if err != nil {
		return false, fmt.Errorf("trust bundle: %w", err)
	}
	want := string(pki.EncodeCertificates(Unique(certs)...))
	name := v1alpha1.TrustBundleName(namespace)
	err = retry.OnError(retry.DefaultRetry, func(err error) bool {
		return apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err)
	}, func() error { return apply(ctx, c, name, namespace, want) })
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, errNotServed), meta.IsNoMatchError(err):
		return false, nil
	}
	return false, err
}

// apply creates or updates the ClusterTrustBundle name once.
func apply(ctx context.Context, c client.Client, name, namespace, want string) error {
	var cur certificatesv1.ClusterTrustBundle
	err := c.Get(ctx, client.ObjectKey{Name: name}, &cur)
	if apierrors.IsNotFound(err) {
		ctb := &certificatesv1.ClusterTrustBundle{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{v1alpha1.TrustBundleLabel: namespace}},
			Spec:       certificatesv1.ClusterTrustBundleSpec{SignerName: v1alpha1.TrustBundleSignerName, TrustBundle: want},
		}
		err := c.Create(ctx, ctb)
		if apierrors.IsNotFound(err) {
			// A create answered NotFound: the resource itself is missing.
			return errNotServed
		}
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("failed to create ClusterTrustBundle %s: %w", name, err)
		}
		return err
	}
	if err != nil {
		return fmt.Errorf("failed to get ClusterTrustBundle %s: %w", name, err)
	}
	if cur.Spec.TrustBundle == want && cur.Labels[v1alpha1.TrustBundleLabel] == namespace {
		return nil
	}
	cur.Spec.TrustBundle = want
	if cur.Labels == nil {
		cur.Labels = map[string]string{}
	}
	cur.Labels[v1alpha1.TrustBundleLabel] = namespace
	if err := c.Update(ctx, &cur); err != nil {
		if apierrors.IsConflict(err) {
			return err
		}
		return fmt.Errorf("failed to update ClusterTrustBundle %s: %w", name, err)
	}
	return nil
}
