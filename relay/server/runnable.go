package server

import (
	"context"

	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/manager"
)

// leaderLease is the Lease the relay-server replicas elect a leader with.
const leaderLease = "relay-server"

// replicaRunnable is a manager runnable that runs on every replica, leader
// or not.
type replicaRunnable func(context.Context) error

func (f replicaRunnable) Start(ctx context.Context) error { return f(ctx) }
func (replicaRunnable) NeedLeaderElection() bool          { return false }

// onEveryReplica makes f a runnable of every replica: without it the
// manager would run f on the leader only.
func onEveryReplica(f func(context.Context) error) manager.Runnable { return replicaRunnable(f) }

// everyReplica are the options of a controller that runs on every replica.
func everyReplica() controller.Options {
	return controller.Options{NeedLeaderElection: ptr.To(false)}
}
