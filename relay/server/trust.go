package server

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	meshv1alpha1 "github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/pkg/pki"
	relayv1 "github.com/meshrelay/meshrelay/relay/api/v1"
)

// Federated trust (flow 6 of the design). For each RootTrustPolicy in its
// namespace the server keeps the policy's root; for each connected cluster
// the policy applies to, it compares what the agent reports of
// istio-system/cacerts with the policy and, when the intermediate is
// missing, under another root or in its renewal window, asks the agent
// (pull stream) for a CSR. The agent makes the key inside its cluster and
// sends only the CSR (push stream); the server signs it with the root and
// returns the chain (pull stream). The key never reaches this cluster.

const (
	// defaultIntermediateTTL is the lifetime of an Istio intermediate when
	// the policy sets none.
	defaultIntermediateTTL = 365 * 24 * time.Hour
	// minIntermediateTTL keeps renewal (a tenth of the lifetime before
	// expiry) longer than a round trip to the agent.
	minIntermediateTTL = time.Minute
	// intermediateGraceRatio renews an intermediate when this fraction of
	// its lifetime is left, as client certificates are by default.
	intermediateGraceRatio = config.DefaultRotationGracePeriodRatio
	// askAgain is how long the server waits for a CSR before asking again.
	askAgain = 30 * time.Second
	// askAfterFailure is that wait after the agent reported a failure.
	askAfterFailure = 5 * time.Minute
	// trustTick is how often connected clusters are checked for renewal.
	trustTick = 5 * time.Second
)

// Reasons in relay_istio_intermediate_failures_total.
const (
	failRoot     = "root"
	failRequest  = "bad_request"
	failNoPolicy = "no_policy"
	failAgent    = "agent"
)

// asked records a request for a CSR.
type asked struct {
	at         time.Time
	rootSHA256 string
}

// trustPolicy is a loaded RootTrustPolicy whose root is usable.
type trustPolicy struct {
	name        string
	created     time.Time
	signer      *pki.Certified
	rootPEM     []byte
	rootSHA256  string
	ttl         time.Duration
	clusters    []string
	autoRestart bool
}

func (p *trustPolicy) appliesTo(cluster string) bool {
	return len(p.clusters) == 0 || slices.Contains(p.clusters, cluster)
}

type trust struct {
	client  client.Client
	api     client.Reader
	cfg     *config.Server
	conns   *connections
	metrics *metrics
	now     func() time.Time
	log     logr.Logger

	mu       sync.Mutex
	policies map[string]*trustPolicy
	// reports are the agents' last reports of their cacerts, by cluster.
	reports map[string]*relayv1.IstioCAStatus
	// asked is when each cluster was last asked for a CSR, and under which
	// root: a new root is asked for at once.
	asked map[string]asked
	// conflicts are the policies told that another serves a cluster, by
	// cluster and policy, with the one that serves it.
	conflicts map[[2]string]string
}

func newTrust(cfg *config.Server, conns *connections, m *metrics, now func() time.Time, log logr.Logger) *trust {
	return &trust{
		cfg: cfg, conns: conns, metrics: m, now: now, log: log,
		policies:  map[string]*trustPolicy{},
		reports:   map[string]*relayv1.IstioCAStatus{},
		asked:     map[string]asked{},
		conflicts: map[[2]string]string{},
	}
}

// setup registers the RootTrustPolicy controller (its root secrets enqueue
// it too) and the renewal check that runs every trustTick.
func (t *trust) setup(mgr ctrl.Manager) error {
	t.client, t.api = mgr.GetClient(), mgr.GetAPIReader()
	rootSecret := handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, o client.Object) []reconcile.Request {
		var list meshv1alpha1.RootTrustPolicyList
		if err := t.client.List(ctx, &list, client.InNamespace(t.cfg.Namespace)); err != nil {
			return nil
		}
		var out []reconcile.Request
		for i := range list.Items {
			if rootSecretName(&list.Items[i]) == client.ObjectKeyFromObject(o) {
				out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&list.Items[i])})
			}
		}
		return out
	})
	err := ctrl.NewControllerManagedBy(mgr).Named("root-trust-policies").
		For(&meshv1alpha1.RootTrustPolicy{}).
		Watches(&corev1.Secret{}, rootSecret).
		Complete(reconcile.Func(t.reconcile))
	if err != nil {
		return fmt.Errorf("failed to set up the RootTrustPolicy controller: %w", err)
	}
	return mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
		tick := time.NewTicker(trustTick)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-tick.C:
				t.checkAll()
			}
		}
	}))
}

// reconcile loads a policy's root (making it when generated) and checks
// every connected cluster against it. A deleted policy is forgotten: its
// clusters' intermediates are no longer renewed.
func (t *trust) reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	log := t.log.WithValues("policy", req.Name)
	var p meshv1alpha1.RootTrustPolicy
	err := t.client.Get(ctx, req.NamespacedName, &p)
	if apierrors.IsNotFound(err) || (err == nil && p.DeletionTimestamp != nil) || (err == nil && p.Namespace != t.cfg.Namespace) {
		t.mu.Lock()
		_, had := t.policies[req.Name]
		delete(t.policies, req.Name)
		t.mu.Unlock()
		if had {
			log.Info("RootTrustPolicy removed: its clusters' intermediates are no longer renewed")
		}
		return reconcile.Result{}, nil
	}
	if err != nil {
		return reconcile.Result{}, err
	}
	// notReady forgets the policy (nothing is issued under it) and says why
	// in its Ready condition.
	notReady := func(reason, msg string) error {
		t.mu.Lock()
		delete(t.policies, p.Name)
		t.mu.Unlock()
		log.Info("RootTrustPolicy not ready", "reason", reason, "error", msg)
		return t.updateStatus(ctx, p.Name, func(st *meshv1alpha1.RootTrustPolicyStatus) {
			st.ObservedGeneration = p.Generation
			meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: "Ready", Status: metav1.ConditionFalse, Reason: reason, Message: msg, ObservedGeneration: p.Generation})
		})
	}
	ttl := defaultIntermediateTTL
	if o := p.Spec.Config.IntermediateCertOptions.TTL; o != nil {
		ttl = o.Duration
	}
	if ttl < minIntermediateTTL {
		return reconcile.Result{}, notReady("InvalidSpec", fmt.Sprintf("spec.config.intermediateCertOptions.ttl %s is shorter than %s: set a longer one", ttl, minIntermediateTTL))
	}
	signer, err := ensureTrustRoot(ctx, t.client, t.api, &p, t.now())
	if err != nil {
		t.metrics.trustFailures.WithLabelValues(p.Name, failRoot).Inc()
		return reconcile.Result{RequeueAfter: time.Minute}, notReady("RootUnavailable", err.Error())
	}
	root := signer.Root()
	tp := &trustPolicy{
		name: p.Name, created: p.CreationTimestamp.Time, signer: signer,
		rootPEM: pki.EncodeCertificates(root), rootSHA256: pki.Fingerprint(root),
		ttl: ttl, clusters: p.Spec.ApplyToClusters, autoRestart: p.Spec.Config.AutoRestartPods,
	}
	t.mu.Lock()
	old := t.policies[p.Name]
	t.policies[p.Name] = tp
	t.mu.Unlock()
	if old == nil || old.rootSHA256 != tp.rootSHA256 {
		log.Info("RootTrustPolicy root loaded", "secret", rootSecretName(&p).String(), "sha256", tp.rootSHA256, "notAfter", root.NotAfter)
	}
	rs := rootStatus(rootSecretName(&p), root)
	err = t.updateStatus(ctx, p.Name, func(st *meshv1alpha1.RootTrustPolicyStatus) {
		st.ObservedGeneration = p.Generation
		if st.Root != nil && st.Root.SHA256 != rs.SHA256 {
			for i := range st.Clusters {
				st.Clusters[i].Issued = false
			}
		}
		st.Root = rs
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: "Ready", Status: metav1.ConditionTrue, Reason: "RootLoaded",
			Message: "the root is loaded; connected clusters get their intermediates", ObservedGeneration: p.Generation})
	})
	t.checkAll()
	return reconcile.Result{}, err
}

// policyFor returns the policy that serves cluster: the oldest of those that
// apply to it (by creation, then name), with the names of the others.
// t.mu must be held.
func (t *trust) policyFor(cluster string) (*trustPolicy, []string) {
	var apply []*trustPolicy
	for _, p := range t.policies {
		if p.appliesTo(cluster) {
			apply = append(apply, p)
		}
	}
	if len(apply) == 0 {
		return nil, nil
	}
	sort.Slice(apply, func(i, j int) bool {
		if !apply[i].created.Equal(apply[j].created) {
			return apply[i].created.Before(apply[j].created)
		}
		return apply[i].name < apply[j].name
	})
	var others []string
	for _, p := range apply[1:] {
		others = append(others, p.name)
	}
	return apply[0], others
}

// renewalReason says why cluster needs a new intermediate under p, given
// what its agent reported; "" means it does not.
func renewalReason(rep *relayv1.IstioCAStatus, p *trustPolicy, now time.Time) string {
	switch {
	case rep.GetNotAfter() == 0:
		return "no intermediate in cacerts"
	case rep.GetPolicy() != p.name:
		return fmt.Sprintf("cacerts was not issued under this policy (it says %q)", rep.GetPolicy())
	case rep.GetRootSha256() != p.rootSHA256:
		return "the policy's root changed"
	}
	renewAt, err := pki.RenewAt(time.Unix(rep.GetNotBefore(), 0), time.Unix(rep.GetNotAfter(), 0), intermediateGraceRatio, 0)
	switch {
	case err != nil:
		return fmt.Sprintf("the reported intermediate is unusable: %v", err)
	case !now.Before(renewAt):
		return "the intermediate is in its renewal window"
	}
	return ""
}

// report records what cluster's agent found in cacerts and checks it.
func (t *trust) report(ctx context.Context, cluster string, rep *relayv1.IstioCAStatus) {
	if na := rep.GetNotAfter(); na > 0 && rep.GetPolicy() != "" {
		t.conns.setIstioExpiry(cluster, rep.GetPolicy(), na)
	}
	t.mu.Lock()
	newErr := rep.GetError() != "" && t.reports[cluster].GetError() != rep.GetError()
	t.reports[cluster] = rep
	t.mu.Unlock()
	if newErr && rep.GetPolicy() != "" {
		t.metrics.trustFailures.WithLabelValues(rep.GetPolicy(), failAgent).Inc()
		t.log.Info("agent failed to install its intermediate", "cluster", cluster, "policy", rep.GetPolicy(), "error", rep.GetError())
		t.recordCluster(ctx, rep.GetPolicy(), cluster, func(c *meshv1alpha1.ClusterIntermediateStatus) {
			c.LastError = "agent: " + rep.GetError()
			c.LastErrorTime = ptrTime(t.now())
		})
	}
	t.check(cluster)
}

// checkAll checks every cluster whose agent has reported; check asks only
// those with an open pull stream here.
func (t *trust) checkAll() {
	t.mu.Lock()
	if len(t.policies) == 0 {
		t.mu.Unlock()
		return
	}
	clusters := make([]string, 0, len(t.reports))
	for c := range t.reports {
		clusters = append(clusters, c)
	}
	t.mu.Unlock()
	for _, c := range clusters {
		t.check(c)
	}
}

// check asks cluster's agents for a CSR when its intermediate needs
// renewing, at most once per askAgain. A cluster whose agent has not
// reported yet is left until it does (it reports before opening its pull
// stream).
func (t *trust) check(cluster string) {
	now := t.now()
	t.mu.Lock()
	p, others := t.policyFor(cluster)
	rep := t.reports[cluster]
	var tell []string
	for _, o := range others {
		if k := [2]string{cluster, o}; t.conflicts[k] != p.name {
			t.conflicts[k] = p.name
			tell = append(tell, o)
		}
	}
	if p == nil || rep == nil {
		t.mu.Unlock()
		return
	}
	reason := renewalReason(rep, p, now)
	wait := askAgain
	if rep.GetError() != "" {
		wait = askAfterFailure // the agent could not install the last one
	}
	last := t.asked[cluster]
	ask := reason != "" && (now.Sub(last.at) >= wait || last.rootSHA256 != p.rootSHA256)
	t.mu.Unlock()
	for _, o := range tell {
		msg := fmt.Sprintf("cluster %s is served by RootTrustPolicy %s, which is older: a cluster has one istio-system/cacerts; narrow applyToClusters", cluster, p.name)
		t.log.Info("RootTrustPolicies overlap", "cluster", cluster, "policy", o, "servedBy", p.name)
		t.recordCluster(context.Background(), o, cluster, func(c *meshv1alpha1.ClusterIntermediateStatus) {
			c.Issued = false
			c.LastError = msg
			c.LastErrorTime = ptrTime(now)
		})
	}
	if !ask {
		return
	}
	n := t.conns.send(cluster, &relayv1.Instruction{Instruction: &relayv1.Instruction_IssueIntermediate{IssueIntermediate: &relayv1.IssueIntermediate{Policy: p.name}}})
	if n == 0 {
		return // not connected here: another replica, or a later stream, asks
	}
	t.mu.Lock()
	t.asked[cluster] = asked{at: now, rootSHA256: p.rootSHA256}
	t.mu.Unlock()
	t.log.Info("asked for an Istio intermediate CSR", "cluster", cluster, "policy", p.name, "reason", reason)
}

// sign signs an agent's intermediate CSR under the policy that serves its
// cluster and sends the result back on the cluster's pull streams (the
// replica holding the key takes it).
func (t *trust) sign(ctx context.Context, cluster string, req *relayv1.IntermediateCSR) {
	now := t.now()
	log := t.log.WithValues("cluster", cluster, "policy", req.GetPolicy())
	t.mu.Lock()
	p, _ := t.policyFor(cluster)
	t.mu.Unlock()
	if p == nil || p.name != req.GetPolicy() {
		t.metrics.trustFailures.WithLabelValues(req.GetPolicy(), failNoPolicy).Inc()
		log.Info("refused an intermediate CSR: no RootTrustPolicy serves this cluster under that name")
		return
	}
	fail := func(err error) {
		t.metrics.trustFailures.WithLabelValues(p.name, failRequest).Inc()
		log.Info("refused an intermediate CSR", "error", err.Error())
		t.recordCluster(ctx, p.name, cluster, func(c *meshv1alpha1.ClusterIntermediateStatus) {
			c.LastError = err.Error()
			c.LastErrorTime = ptrTime(now)
		})
	}
	if len(req.GetCsr()) > maxCSRBytes {
		fail(fmt.Errorf("CSR too large: at most %d bytes", maxCSRBytes))
		return
	}
	csr, err := pki.DecodeCSR(req.GetCsr())
	if err != nil {
		fail(fmt.Errorf("certificate request: %w", err))
		return
	}
	issued, err := p.signer.SignIstioIntermediate(csr, cluster, p.ttl, now)
	if err != nil {
		fail(err)
		return
	}
	t.conns.send(cluster, &relayv1.Instruction{Instruction: &relayv1.Instruction_IntermediateIssued{IntermediateIssued: &relayv1.IntermediateIssued{
		Policy: p.name, CertificateChain: issued.CertPEM, RootCertificate: p.rootPEM, AutoRestartPods: p.autoRestart,
	}}})
	t.metrics.trustIssued.WithLabelValues(p.name).Inc()
	serial := issued.Cert.SerialNumber.Text(16)
	log.Info("issued Istio intermediate CA", "serial", serial, "notAfter", issued.Cert.NotAfter)
	t.recordCluster(ctx, p.name, cluster, func(c *meshv1alpha1.ClusterIntermediateStatus) {
		c.Issued = true
		c.Serial = serial
		c.NotAfter = ptrTime(issued.Cert.NotAfter)
		c.IssuedAt = ptrTime(now)
		c.LastError, c.LastErrorTime = "", nil
	})
}

// recordCluster changes cluster's entry in policy's status.
func (t *trust) recordCluster(ctx context.Context, policy, cluster string, change func(*meshv1alpha1.ClusterIntermediateStatus)) {
	err := t.updateStatus(ctx, policy, func(st *meshv1alpha1.RootTrustPolicyStatus) {
		// Entries are kept sorted by name.
		i, found := slices.BinarySearchFunc(st.Clusters, cluster, func(c meshv1alpha1.ClusterIntermediateStatus, name string) int {
			return strings.Compare(c.Name, name)
		})
		if !found {
			st.Clusters = slices.Insert(st.Clusters, i, meshv1alpha1.ClusterIntermediateStatus{Name: cluster})
		}
		change(&st.Clusters[i])
	})
	if err != nil && !apierrors.IsNotFound(err) {
		t.log.Info("failed to record the intermediate in the policy's status", "policy", policy, "cluster", cluster, "error", err.Error())
	}
}

// updateStatus applies change to policy's status, reading it from the API
// server and retrying on conflicts: several server replicas write it.
func (t *trust) updateStatus(ctx context.Context, policy string, change func(*meshv1alpha1.RootTrustPolicyStatus)) error {
	key := types.NamespacedName{Namespace: t.cfg.Namespace, Name: policy}
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var p meshv1alpha1.RootTrustPolicy
		if err := t.api.Get(ctx, key, &p); err != nil {
			return err
		}
		before := p.Status.DeepCopy()
		change(&p.Status)
		if equality.Semantic.DeepEqual(before, &p.Status) {
			return nil
		}
		return t.client.Status().Update(ctx, &p)
	})
}

func ptrTime(at time.Time) *metav1.Time {
	mt := metav1.NewTime(at.Truncate(time.Second))
	return &mt
}
