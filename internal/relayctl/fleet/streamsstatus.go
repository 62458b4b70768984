package fleet

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
)

// replicaLeaseLabel marks the Lease each relay-server replica renews while
// it runs (relay-server-replica-<replica>, held by the replica's name). An
// entry of status.replicas counts only while its replica's Lease is live:
// the leader removes the entries of a replica that is gone, but only while
// a leader runs.
const replicaLeaseLabel = v1alpha1.ReplicaLeaseLabel

// leaseSkew is how far this machine's clock may run ahead of the one that
// renewed a Lease before the Lease counts as expired.
const leaseSkew = 10 * time.Second

// replicaLeases reads which relay-server replicas are live, and reports
// when none is: the status of every cluster is stale then.
func (c *checker) replicaLeases(ctx context.Context) error {
	const side, check = "management", "relay-server replicas"
	ns := c.o.Server.Namespace
	var leases coordinationv1.LeaseList
	err := c.o.Mgmt.List(ctx, &leases, client.InNamespace(ns), client.HasLabels{replicaLeaseLabel})
	switch {
	case apierrors.IsForbidden(err):
		c.add(side, check, Warning, "cannot list Leases in %s (%v): every entry of KubernetesCluster status is taken as live, although a replica that stopped may still have one; ask for list on leases, or use --streams-from=metrics", ns, err)
		return nil
	case err != nil:
		return fmt.Errorf("management cluster: failed to list the relay-server replica Leases in %s: %w", ns, err)
	}
	c.streams.live = liveReplicas(leases.Items, c.o.Now)
	if len(c.streams.live) == 0 {
		c.add(side, check, Problem, "no relay-server replica has renewed its Lease (relay-server-replica-*) in %s: KubernetesCluster status is stale; is relay-server running (kubectl -n %s get pods -l app.kubernetes.io/name=relay-server), and is its version one that writes status?", ns, ns)
		return nil
	}
	names := make([]string, 0, len(c.streams.live))
	for r := range c.streams.live {
		names = append(names, r)
	}
	slices.Sort(names)
	c.add(side, check, OK, "live: %s", strings.Join(names, ", "))
	return nil
}

// liveReplicas is the set of replicas whose Lease was renewed within its
// duration (plus leaseSkew) at now.
func liveReplicas(leases []coordinationv1.Lease, now time.Time) map[string]bool {
	live := map[string]bool{}
	for _, l := range leases {
		s := l.Spec
		if s.HolderIdentity == nil || s.RenewTime == nil || s.LeaseDurationSeconds == nil {
			continue
		}
		if now.Before(s.RenewTime.Add(time.Duration(*s.LeaseDurationSeconds)*time.Second + leaseSkew)) {
			live[*s.HolderIdentity] = true
		}
	}
	return live
}

// statusVerdict is what a KubernetesCluster's status says of its streams.
type statusVerdict struct {
	replicas   []ReplicaStreams
	push, pull int
	condition  *metav1.Condition
	status     Status
	detail     string
}

// judgeStatus judges kc's streams from its status: connected when a live
// replica (live nil: every replica) holds both a push and a pull stream.
// When not, the detail is the Connected condition's message, or says why
// the status cannot be trusted. logs says where the agent's logs are.
func judgeStatus(kc *v1alpha1.KubernetesCluster, live map[string]bool, logs string) statusVerdict {
	v := statusVerdict{condition: meta.FindStatusCondition(kc.Status.Conditions, v1alpha1.ConditionConnected)}
	if v.condition != nil {
		v.condition = v.condition.DeepCopy()
	}
	ns := kc.Namespace
	if v.condition == nil && len(kc.Status.Replicas) == 0 {
		v.status = Problem
		v.detail = fmt.Sprintf("relay-server has not written status for %s: is relay-server running (kubectl -n %s get pods -l app.kubernetes.io/name=relay-server), and is its version one that writes status? --streams-from=metrics reads its metrics instead", kc.Name, ns)
		return v
	}
	var holders int
	var stale []string
	for _, r := range kc.Status.Replicas {
		if r.PushStreams == 0 && r.PullStreams == 0 {
			continue
		}
		if live != nil && !live[r.Replica] {
			stale = append(stale, r.Replica)
			continue
		}
		v.replicas = append(v.replicas, ReplicaStreams{Replica: r.Replica, Push: int(r.PushStreams), Pull: int(r.PullStreams)})
		v.push += int(r.PushStreams)
		v.pull += int(r.PullStreams)
		if r.PushStreams > 0 && r.PullStreams > 0 {
			holders++
		}
	}
	slices.SortFunc(v.replicas, func(a, b ReplicaStreams) int { return strings.Compare(a.Replica, b.Replica) })
	counts := fmt.Sprintf("%d push and %d pull streams", v.push, v.pull)
	switch cond := v.condition; {
	case holders > 0:
		v.status = OK
		v.detail = fmt.Sprintf("connected: %s, on %s", counts, replicaList(v.replicas))
	case len(stale) > 0:
		slices.Sort(stale)
		v.status = Problem
		v.detail = fmt.Sprintf("not connected: status counts its streams on relay-server replica(s) %s, whose Lease has expired or is gone, so they no longer run; agents reconnect to a live replica on their own: check relay-server (kubectl -n %s get pods -l app.kubernetes.io/name=relay-server), then %s", strings.Join(stale, ", "), ns, logs)
	case cond != nil && cond.Status == metav1.ConditionFalse:
		v.status = Problem
		v.detail = fmt.Sprintf("not connected (%s): %s; %s", counts, cond.Message, logs)
	default:
		v.status = Problem
		v.detail = fmt.Sprintf("not connected: %s on live relay-server replicas, want a replica with at least 1 of each: %s for the reason", counts, logs)
	}
	return v
}
