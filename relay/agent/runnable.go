package agent

import (
	"context"

	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/manager"
)

// runnableFunc is a manager runnable that runs on every replica.
type runnableFunc func(context.Context) error

func (f runnableFunc) Start(ctx context.Context) error { return f(ctx) }
func (runnableFunc) NeedLeaderElection() bool          { return false }

func nonLeader(f func(context.Context) error) manager.Runnable { return runnableFunc(f) }

// controllerOptions make the secret watcher run on every replica.
func controllerOptions() controller.Options {
	return controller.Options{NeedLeaderElection: ptr.To(false)}
}
