package agent

import (
	"context"
	"fmt"

	"github.com/go-logr/logr"
	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	crconfig "sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/meshrelay/meshrelay/internal/everyreplica"
	"github.com/meshrelay/meshrelay/internal/namedsecrets"
	"github.com/meshrelay/meshrelay/internal/scheme"
	"github.com/meshrelay/meshrelay/pkg/config"
)

// newManager makes the agent's controller manager, and with leader
// election the Lease is relay-agent-<cluster> in the agent's namespace.
// Its cache holds no Secret and no ClusterTrustBundle: one read through its
// client goes to the API server by name, and the watched secrets have
// their own caches (secretWatch.cache), so that the agent's RBAC needs
// only their names.
func newManager(rc *rest.Config, cfg *config.Agent, log logr.Logger) (manager.Manager, error) {
	s, err := scheme.Scheme()
	if err != nil {
		return nil, err
	}
	mgr, err := ctrl.NewManager(rc, ctrl.Options{
		Scheme:                        s,
		Logger:                        log,
		Cache:                         cache.Options{DefaultNamespaces: map[string]cache.Config{cfg.Namespace: {}}},
		Client:                        client.Options{Cache: &client.CacheOptions{DisableFor: []client.Object{&corev1.Secret{}, &certificatesv1.ClusterTrustBundle{}}}},
		Metrics:                       metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress:        "0",
		LeaderElection:                cfg.LeaderElection,
		LeaderElectionID:              "relay-agent-" + cfg.Cluster,
		LeaderElectionNamespace:       cfg.Namespace,
		LeaderElectionReleaseOnCancel: true,
		Controller:                    crconfig.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		return nil, fmt.Errorf("failed to create manager: %w", err)
	}
	return mgr, nil
}

// secretWatch routes changes of the watched secrets: the Istio CA secret to
// the Istio CA, the others to the watcher and then the rotator.
type secretWatch struct {
	store    *secretStore
	istioKey *types.NamespacedName // nil when federated trust is off
	// cache reads and watches the keys, and only them.
	cache   *namedsecrets.Cache
	watcher *watcher
	istio   *istioCA
	// changed wakes the rotator; statusChanged asks for a fresh status.
	changed       signal
	statusChanged func()
}

// keys are the watched secrets: with a trust bundle folder the root secret
// is not one of them, and the agent needs no read access to it.
func (w *secretWatch) keys() []types.NamespacedName {
	keys := []types.NamespacedName{w.store.client, w.store.token}
	if w.store.trust == nil {
		keys = append(keys, w.store.root)
	}
	if w.istioKey != nil {
		keys = append(keys, *w.istioKey)
	}
	return keys
}

// newCache makes the cache of the watched secrets, one informer per name,
// and adds it to mgr: the agent's Role names exactly these secrets.
func (w *secretWatch) newCache(mgr manager.Manager) error {
	c, err := namedsecrets.AddTo(mgr, w.keys())
	if err != nil {
		return err
	}
	w.cache = c
	return nil
}

// setUp adds the controller that watches the secrets, on every replica.
func (w *secretWatch) setUp(mgr manager.Manager) error {
	b := w.cache.Watch(ctrl.NewControllerManagedBy(mgr).Named("relay-agent-watcher").WithOptions(everyreplica.ControllerOptions()))
	if err := b.Complete(reconcile.Func(w.reconcile)); err != nil {
		return fmt.Errorf("failed to set up the secret watcher: %w", err)
	}
	return nil
}

func (w *secretWatch) reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	if w.istio != nil && req.NamespacedName == *w.istioKey {
		if w.istio.refresh(ctx) {
			w.statusChanged()
		}
		return reconcile.Result{}, nil
	}
	_, _ = w.watcher.load(ctx)
	w.changed.notify()
	return reconcile.Result{}, nil
}

// startStreams returns the every-replica runnable that waits for the
// cache, reads the secrets once, marks the agent ready and keeps the
// streams open.
func (w *secretWatch) startStreams(mgr manager.Manager, st *streams) func(context.Context) error {
	return func(ctx context.Context) error {
		if !mgr.GetCache().WaitForCacheSync(ctx) || !w.cache.WaitForCacheSync(ctx) {
			return nil
		}
		_, _ = w.watcher.load(ctx)
		if w.istio != nil {
			w.istio.refresh(ctx)
		}
		w.watcher.markReady()
		return st.run(ctx)
	}
}

// watchTrustDir returns the every-replica runnable that, once the cache
// has synced, polls the trust bundle folder d and reads the secrets again
// after each change, which updates the trust anchors and wakes the
// rotator.
func (w *secretWatch) watchTrustDir(d *trustDir) func(context.Context) error {
	return func(ctx context.Context) error {
		if !w.cache.WaitForCacheSync(ctx) {
			return nil
		}
		d.changed = func(ctx context.Context) {
			_, _ = w.watcher.load(ctx)
			w.changed.notify()
		}
		return d.run(ctx)
	}
}
