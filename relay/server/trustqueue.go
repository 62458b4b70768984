package server

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/source"

	meshv1alpha1 "github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
)

// policyQueueSize is how many policies wait for the reconciler's watch to
// take them.
const policyQueueSize = 1024

// policyQueue hands RootTrustPolicies to the reconciler from goroutines
// that must not call the API server, such as a relay stream's.
type policyQueue struct {
	namespace string
	events    chan event.GenericEvent
}

func newPolicyQueue(namespace string) *policyQueue {
	return &policyQueue{namespace: namespace, events: make(chan event.GenericEvent, policyQueueSize)}
}

// enqueue asks the reconciler to reconcile policy and reports whether the
// queue took it. It never blocks: a policy that does not fit is left to
// the next sweep (trust's tick enqueues every policy with results pending).
func (q *policyQueue) enqueue(policy string) bool {
	ev := event.GenericEvent{Object: &meshv1alpha1.RootTrustPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: q.namespace, Name: policy}}}
	select {
	case q.events <- ev:
		return true
	default:
		return false
	}
}

// source is the reconciler's watch of the queue.
func (q *policyQueue) source() source.Source {
	return source.Channel(q.events, &handler.EnqueueRequestForObject{})
}
