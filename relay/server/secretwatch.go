package server

import (
	"context"
	"fmt"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/meshrelay/meshrelay/internal/everyreplica"
	"github.com/meshrelay/meshrelay/internal/namedsecrets"
)

// watchSecrets makes the cache of the relay secrets the keyring loads, one
// informer per name (relay-server's Role names exactly these secrets), and
// reloads the keyring when one of them changes. Any other secret, such as a
// RootTrustPolicy's root, is read from the API server by name.
func (s *Server) watchSecrets(mgr ctrl.Manager) error {
	named, err := namedsecrets.AddTo(mgr, s.keys.secretKeys())
	if err != nil {
		return err
	}
	s.secrets = named
	err = named.Watch(ctrl.NewControllerManagedBy(mgr).Named("relay-secrets").WithOptions(everyreplica.ControllerOptions())).Complete(reconcile.Func(func(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
		_ = s.keys.load(ctx, named, s.opts.Clock.Now(), s.log.WithValues("changed", req.NamespacedName.String()))
		return reconcile.Result{}, nil
	}))
	if err != nil {
		return fmt.Errorf("failed to set up the relay secret watcher: %w", err)
	}
	return nil
}
