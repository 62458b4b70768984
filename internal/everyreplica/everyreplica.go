// Package everyreplica makes controller-runtime runnables and controllers
// that run on every replica of a component, leader or not: relay-server and
// relay-agent elect a leader for some work only, and a runnable that does
// not say otherwise would run on the leader alone.
package everyreplica

import (
	"context"

	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/manager"
)

type runnable func(context.Context) error

func (f runnable) Start(ctx context.Context) error { return f(ctx) }
func (runnable) NeedLeaderElection() bool          { return false }

// Runnable makes f a manager runnable of every replica.
func Runnable(f func(context.Context) error) manager.Runnable { return runnable(f) }

// ControllerOptions are the options of a controller that runs on every
// replica.
func ControllerOptions() controller.Options {
	return controller.Options{NeedLeaderElection: ptr.To(false)}
}
