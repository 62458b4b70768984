package webhook

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	meshv1alpha1 "github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/pkg/pki"
)

// Paths the admission webhooks are served on; the manifests' webhook
// configurations name them.
const (
	SecretsPath      = "/validate-relay-secrets"
	CertificatesPath = "/validate-certificates"
	ClustersPath     = "/validate-kubernetesclusters"
	InjectPath       = "/inject-agent"
)

// webhookSetup is what each resource's file provides: its webhook on
// controller-runtime's typed path, registered at its own path.
type webhookSetup interface {
	SetupWebhookWithManager(mgr ctrl.Manager) error
}

// setupWithManager registers every webhook on mgr's webhook server. The
// secret and Certificate validators read the relay secrets (and, on the
// management cluster, the KubernetesClusters) through mgr's cached client,
// and read them again from the API server before a denial;
// now is the clock of validity checks; clusterTrustBundles reports whether
// the cluster serves ClusterTrustBundles.
func setupWithManager(mgr ctrl.Manager, cfg *config.Webhook, now func() time.Time, clusterTrustBundles func() bool) error {
	useLinkCache()
	sec := &secrets{cfg: cfg, reader: mgr.GetClient(), live: mgr.GetAPIReader(), now: now, roots: &rootCache{}}
	for _, w := range []webhookSetup{
		&secretValidator{s: sec}, &certificateValidator{s: sec}, clusterValidator{}, newPodInjector(cfg, clusterTrustBundles),
	} {
		if err := w.SetupWebhookWithManager(mgr); err != nil {
			return fmt.Errorf("failed to register the %T webhook: %w", w, err)
		}
	}
	return nil
}

// Handlers returns the admission handler of each path, built as
// setupWithManager builds them but without a manager, for tests. reader
// reads the relay secrets and the KubernetesClusters of cfg.Namespace; now
// is the clock of validity checks. The injector takes ClusterTrustBundles
// to be served, as they are from Kubernetes 1.37 on.
func Handlers(cfg *config.Webhook, reader client.Reader, scheme *runtime.Scheme, now func() time.Time) map[string]admission.Handler {
	useLinkCache()
	sec := &secrets{cfg: cfg, reader: reader, now: now, roots: &rootCache{}}
	return map[string]admission.Handler{
		SecretsPath:      &secretReviews{v: &secretValidator{s: sec}},
		CertificatesPath: admission.WithValidator[*cmapi.Certificate](scheme, &certificateValidator{s: sec}),
		ClustersPath:     admission.WithValidator[*meshv1alpha1.KubernetesCluster](scheme, clusterValidator{}),
		InjectPath:       admission.WithDefaulter[*corev1.Pod](scheme, newPodInjector(cfg, func() bool { return true })),
	}
}

// linkCacheOnce sets the process's cache of verified CA links once.
var linkCacheOnce sync.Once

// useLinkCache makes the chain verifications of this process check the
// signature of a CA by a root once per pair (pki.LinkCache): every client
// secret of the fleet chains through the same signing CA to the same
// root, and every other check is still made at each review.
func useLinkCache() {
	linkCacheOnce.Do(func() { pki.SetLinkCache(pki.NewLinkCache(pki.DefaultLinkCacheSize)) })
}

// verdict is a typed validator's answer from what a validate found. The
// errors become one error whose text is the whole denial, subject first and
// then each "path: detail", which controller-runtime returns as it is in a
// 403 Forbidden denial; the warnings go back whether or not it denies.
func verdict(p *problems, subject string) (admission.Warnings, error) {
	if len(p.errs) > 0 {
		return p.warnings, errors.New(p.message(subject))
	}
	return p.warnings, nil
}

// internalError keeps a failure to read what the checks need apart from a
// denial: controller-runtime answers an error carrying an API status with
// that status, so the API server reports a 500 with err's text, not a 403.
func internalError(err error) error {
	return &apierrors.StatusError{ErrStatus: metav1.Status{Code: http.StatusInternalServerError, Message: err.Error()}}
}

// inRequestNamespace gives obj the namespace of the admission request when
// the object itself names none: the API server creates it there.
func inRequestNamespace(ctx context.Context, obj client.Object) {
	if obj.GetNamespace() != "" {
		return
	}
	if req, err := admission.RequestFromContext(ctx); err == nil {
		obj.SetNamespace(req.Namespace)
	}
}
