package webhook

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/webhook/injector"
)

// podInjector adds the relay secrets' volumes, the trust bundle, mounts
// and the agent's settings to agent pods; controller-runtime computes the
// patch from the pod it edits.
type podInjector struct {
	settings injector.Settings
	// clusterTrustBundles reports whether the cluster serves
	// ClusterTrustBundles, so that the trust bundle volume may select one.
	clusterTrustBundles func() bool
	// problem, when set, is why this webhook cannot inject: agent pods are
	// refused with it, since an agent without its settings cannot start.
	problem error
}

var _ admission.Defaulter[*corev1.Pod] = &podInjector{}

// newPodInjector returns the injector of cfg's agent settings;
// clusterTrustBundles reports whether the cluster serves
// ClusterTrustBundles.
func newPodInjector(cfg *config.Webhook, clusterTrustBundles func() bool) *podInjector {
	d := &podInjector{clusterTrustBundles: clusterTrustBundles, settings: injector.Settings{
		Cluster:         cfg.Cluster,
		ServerAddress:   cfg.ServerAddress,
		Authority:       cfg.Authority,
		ClientTLSSecret: cfg.ClientTLSSecret.Name,
		RootTLSSecret:   cfg.RootTLSSecret.Name,
		TokenSecret:     cfg.TokenSecret.Name,
		Container:       cfg.AgentContainer,
		Namespace:       cfg.Namespace,
	}}
	if err := d.settings.Validate(); err != nil {
		d.problem = fmt.Errorf("relay-webhook cannot inject agent pods: %w: set --cluster and --server-address on the webhook of this workload cluster", err)
	}
	return d
}

// SetupWebhookWithManager serves d on InjectPath.
func (d *podInjector) SetupWebhookWithManager(mgr ctrl.Manager) error {
	return ctrl.NewWebhookManagedBy(mgr, &corev1.Pod{}).
		WithDefaulter(d).
		WithDefaulterCustomPath(InjectPath).
		Complete()
}

// Default injects pod, or refuses it when the settings cannot make a
// working agent. A pod already injected is left as it is, so no patch.
func (d *podInjector) Default(ctx context.Context, pod *corev1.Pod) error {
	if d.problem != nil {
		return d.problem
	}
	s := d.settings
	if req, err := admission.RequestFromContext(ctx); err == nil && req.Namespace != "" {
		s.Namespace = req.Namespace
	}
	s.ClusterTrustBundles = d.clusterTrustBundles()
	injector.Pod(pod, s)
	return nil
}
