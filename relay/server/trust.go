package server

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/utils/clock"

	relayv1 "github.com/meshrelay/meshrelay/relay/api/v1"
)

// trustTick is how often connected clusters are checked for renewal.
const trustTick = 5 * time.Second

// trustOptions wire a trust.
type trustOptions struct {
	State   *trustState
	Results *pendingResults
	Queue   *policyQueue
	Conns   *connections
	Metrics *metrics
	Clock   clock.WithTicker
	Log     logr.Logger
}

// trust is federated trust on the relay streams: it keeps the agents'
// reports, asks clusters for CSRs and answers them on their pull streams.
// It never calls the API server, so the streams' goroutines may call it:
// what a policy's status must show goes to the pending results, and the
// policy to the reconciler's queue.
type trust struct {
	trustOptions
	// missed is set when the queue had no room for a policy: the next tick
	// hands the reconciler every policy with results pending.
	missed atomic.Bool
}

func newTrust(o trustOptions) *trust { return &trust{trustOptions: o} }

// report records what cluster's agent found in cacerts and checks it. A
// failure the agent did not report before is counted, logged and left for
// the policy's status, and so is a change of what cacerts holds. rep's
// policy must be empty or one that applies to cluster
// (trustState.applies): it becomes a label and a map key.
func (t *trust) report(cluster string, rep *relayv1.IstioCAStatus) {
	rep = boundRootCerts(rep)
	if na := rep.GetNotAfter(); na > 0 && rep.GetPolicy() != "" {
		t.Conns.setIstioExpiry(cluster, rep.GetPolicy(), na)
	}
	newFailure, moved := t.State.report(cluster, rep)
	if moved {
		t.record(rep.GetPolicy(), holdsResult(cluster, rep, t.Clock.Now()))
	}
	if newFailure && rep.GetPolicy() != "" {
		t.Metrics.trustFailures.WithLabelValues(rep.GetPolicy(), failAgent).Inc()
		t.Log.Error(fmt.Errorf("%s", rep.GetError()), "agent failed to install its intermediate", "cluster", cluster, "policy", rep.GetPolicy())
		t.record(rep.GetPolicy(), clusterResult{cluster: cluster, kind: resultFailed, at: t.Clock.Now(), message: "agent: " + rep.GetError()})
	}
	t.check(cluster)
}

// checkAll checks every cluster whose agent has reported; check asks only
// those with an open pull stream here.
func (t *trust) checkAll() {
	for _, c := range t.State.reportedClusters() {
		t.check(c)
	}
}

// check asks cluster's agents for a CSR when the trust state says to, and
// tells the policies that newly overlap another on cluster, in their status.
func (t *trust) check(cluster string) {
	now := t.Clock.Now()
	d := t.State.decide(cluster, now)
	for _, o := range d.overlapped {
		msg := fmt.Sprintf("cluster %s is served by RootTrustPolicy %s, which is older: a cluster has one istio-system/cacerts; narrow applyToClusters", cluster, d.policy.name)
		t.Log.Info("RootTrustPolicies overlap", "cluster", cluster, "policy", o, "servedBy", d.policy.name)
		t.record(o, clusterResult{cluster: cluster, kind: resultOverlapped, at: now, message: msg})
	}
	t.dropRoots(cluster, now)
	if !d.ask {
		return
	}
	// The CSR is awaited before the ask goes out: a quick agent's answer
	// must find it.
	t.State.awaitCSR(cluster, d.policy.name)
	n := t.Conns.send(cluster, &relayv1.Instruction{Instruction: &relayv1.Instruction_IssueIntermediate{IssueIntermediate: &relayv1.IssueIntermediate{Policy: d.policy.name}}})
	if n == 0 {
		t.State.takeCSR(cluster, d.policy.name)
		return // not connected here: another replica, or a later stream, asks
	}
	t.State.recordAsk(cluster, d.policy.rootSHA256, now)
	t.Log.Info("asked for an Istio intermediate CSR", "cluster", cluster, "policy", d.policy.name, "reason", d.reason)
}

// answer signs an agent's intermediate CSR under the policy that serves its
// cluster and sends the result back on the cluster's pull streams (the
// replica holding the key takes it). The result, issued or refused, is
// left for the policy's status. Only a CSR this replica asked the cluster
// for under that policy, and not answered yet, is considered: others are
// dropped (logged at V(1), since an agent may send many). req's policy
// must be one that applies to cluster (trustState.applies): it becomes a
// label.
func (t *trust) answer(cluster string, req *relayv1.IntermediateCSR) {
	now := t.Clock.Now()
	log := t.Log.WithValues("cluster", cluster, "policy", req.GetPolicy())
	if !t.State.takeCSR(cluster, req.GetPolicy()) {
		log.V(1).Info("ignored an intermediate CSR this server did not ask the cluster for, or asked for once and got already")
		return
	}
	p := t.State.serving(cluster)
	if p == nil || p.name != req.GetPolicy() {
		t.Metrics.trustFailures.WithLabelValues(req.GetPolicy(), failNoPolicy).Inc()
		log.Info("refused an intermediate CSR: that RootTrustPolicy does not serve this cluster (an older one does, or it was just removed)")
		return
	}
	issued, in, err := signIntermediate(p, cluster, req.GetCsr(), now)
	if err != nil {
		t.Metrics.trustFailures.WithLabelValues(p.name, failRequest).Inc()
		log.Info("refused an intermediate CSR", "error", err.Error())
		t.record(p.name, clusterResult{cluster: cluster, kind: resultFailed, at: now, message: err.Error()})
		return
	}
	t.Conns.send(cluster, in)
	t.Metrics.trustIssued.WithLabelValues(p.name).Inc()
	serial := issued.Cert.SerialNumber.Text(16)
	log.Info("issued Istio intermediate CA", "serial", serial, "notAfter", issued.Cert.NotAfter)
	t.record(p.name, clusterResult{cluster: cluster, kind: resultIssued, at: now, serial: serial, notAfter: issued.Cert.NotAfter})
}

// record leaves r for policy's status and hands the policy to the
// reconciler when it had no results pending.
func (t *trust) record(policy string, r clusterResult) {
	if t.Results.add(policy, r) && !t.Queue.enqueue(policy) {
		t.missed.Store(true)
	}
}

// run checks every reported cluster each trustTick until ctx ends. After
// the queue had no room for a policy, a tick hands the reconciler every
// policy with results pending.
func (t *trust) run(ctx context.Context) error {
	tick := t.Clock.NewTicker(trustTick)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C():
			t.checkAll()
			if t.missed.Swap(false) {
				for _, p := range t.Results.policies() {
					if !t.Queue.enqueue(p) {
						t.missed.Store(true)
					}
				}
			}
		}
	}
}
