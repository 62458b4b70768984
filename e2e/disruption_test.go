package e2e

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshrelay/meshrelay/internal/relaysecrettest"
	"github.com/meshrelay/meshrelay/internal/testenv"
	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/pkg/relaysecret"
)

// TestEvictedWebhookReplicaLeavesRelaySecretsAdmitted installs the
// management overlay on a local cluster whose kube-controller-manager runs
// the Deployment, ReplicaSet and disruption controllers, so relay-webhook's
// Deployment makes its two Pods and its PodDisruptionBudget counts them.
// Two relay-webhook processes stand for those Pods behind a TCP front that,
// like the Service, sends only to Pods that are ready and not deleted (no
// kubelet runs: the test writes each Pod's Ready condition as a kubelet
// would). Evicting one Pod through the Eviction API is allowed, and its
// process stops; evicting the other is refused by the budget (429); and a
// relay secret is still admitted, and a bad one still denied, by the
// replica that is left.
func TestEvictedWebhookReplicaLeavesRelaySecretsAdmitted(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	mesh, env := startMesh(ctx, t, testenv.Options{Names: []string{"mgmt"}, ControllerManager: true})
	c := env.Cluster("mgmt")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	cs, err := kubernetes.NewForConfig(c.Config)
	must(err)
	ns := config.DefaultWebhookNamespace
	selector := client.MatchingLabels{"app.kubernetes.io/name": "relay-webhook"}

	// The processes, each standing for one Pod once the Pods exist.
	addrs := make([]string, 2)
	procs := make([]*testenv.Process, 2)
	for i := range addrs {
		addrs[i], err = testenv.FreeAddr()
		must(err)
	}
	// podAddr maps a Pod's name to the process standing for it.
	podAddr := map[string]string{}
	// ready lists the addresses of the Pods a Service would send to.
	ready := func() []string {
		var pods corev1.PodList
		if err := c.Client.List(context.Background(), &pods, client.InNamespace(ns), selector); err != nil {
			return nil
		}
		var out []string
		for _, p := range pods.Items {
			if a, ok := podAddr[p.Name]; ok && p.DeletionTimestamp == nil && podReady(&p) {
				out = append(out, a)
			}
		}
		return out
	}
	front, err := testenv.StartForwarder("127.0.0.1:0", ready)
	must(err)
	t.Cleanup(func() { _ = front.Close() })
	must(mesh.Install(ctx, "mgmt", "management", nil, front.Addr))
	for i, addr := range addrs {
		metrics, err := testenv.FreeAddr()
		must(err)
		procs[i], err = mesh.Start("relay-webhook", fmt.Sprintf("relay-webhook-%d", i), "--kubeconfig", env.Kubeconfig, "--context", "mgmt",
			"--listen-address", addr, "--metrics-address", metrics, "--serving-ip", "127.0.0.1")
		must(err)
		must(testenv.WaitReady(ctx, procs[i], "http://"+metrics+"/readyz", time.Minute))
	}

	var pods []corev1.Pod
	testenv.Eventually(t, "relay-webhook's Deployment makes two Pods", time.Minute, func() error {
		var list corev1.PodList
		if err := c.Client.List(ctx, &list, client.InNamespace(ns), selector); err != nil {
			return err
		}
		if len(list.Items) != 2 {
			return fmt.Errorf("%d pods", len(list.Items))
		}
		pods = list.Items
		return nil
	})
	slices.SortFunc(pods, func(a, b corev1.Pod) int { return strings.Compare(a.Name, b.Name) })
	for i := range pods {
		var priority int32
		if pods[i].Spec.Priority != nil {
			priority = *pods[i].Spec.Priority
		}
		if got := pods[i].Spec.PriorityClassName; got != "meshrelay-critical" || priority != 1000000000 {
			t.Errorf("pod %s: priority class %q, priority %d: want meshrelay-critical resolved to 1000000000", pods[i].Name, got, priority)
		}
		podAddr[pods[i].Name] = addrs[i]
		markReady(ctx, t, c.Client, &pods[i])
	}
	budget := func() (*policyv1.PodDisruptionBudget, error) {
		return cs.PolicyV1().PodDisruptionBudgets(ns).Get(ctx, "relay-webhook", metav1.GetOptions{})
	}
	testenv.Eventually(t, "the budget counts two healthy pods and allows one disruption", time.Minute, func() error {
		pdb, err := budget()
		if err != nil {
			return err
		}
		if s := pdb.Status; s.ObservedGeneration != pdb.Generation || s.CurrentHealthy != 2 || s.ExpectedPods != 2 || s.DisruptionsAllowed != 1 {
			return fmt.Errorf("status %+v", s)
		}
		return nil
	})

	fx := relaysecrettest.New(t)
	good, bad := secretsOfTable(t, fx)
	t.Run("with both replicas a relay secret is admitted and a bad one denied", func(t *testing.T) {
		admitted(ctx, t, c.Client, good, client.DryRunAll)
		denied(ctx, t, c.Client, bad)
		if served := front.Served(); served[addrs[0]]+served[addrs[1]] == 0 {
			t.Errorf("no admission review went through the front: %v", served)
		}
	})

	evict := func(p *corev1.Pod) error {
		return cs.CoreV1().Pods(ns).EvictV1(ctx, &policyv1.Eviction{ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: ns}})
	}
	t.Run("evicting one replica is allowed, and its process stops", func(t *testing.T) {
		if err := evict(&pods[0]); err != nil {
			t.Fatalf("evict %s: %v", pods[0].Name, err)
		}
		must(procs[0].Stop())
		testenv.Eventually(t, "the evicted pod is gone or terminating", 30*time.Second, func() error {
			var p corev1.Pod
			err := c.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: pods[0].Name}, &p)
			if apierrors.IsNotFound(err) || (err == nil && p.DeletionTimestamp != nil) {
				return nil
			}
			return fmt.Errorf("pod %s still there (%v)", pods[0].Name, err)
		})
	})
	t.Run("evicting the other is refused by the budget", func(t *testing.T) {
		testenv.Eventually(t, "the budget counts one healthy pod", time.Minute, func() error {
			pdb, err := budget()
			if err != nil {
				return err
			}
			if s := pdb.Status; s.CurrentHealthy != 1 || s.DisruptionsAllowed != 0 {
				return fmt.Errorf("status %+v", s)
			}
			return nil
		})
		err := evict(&pods[1])
		if !apierrors.IsTooManyRequests(err) || !strings.Contains(err.Error(), "disruption budget") {
			t.Fatalf("evict %s: %v, want 429 naming the disruption budget", pods[1].Name, err)
		}
		var p corev1.Pod
		must(c.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: pods[1].Name}, &p))
		if p.DeletionTimestamp != nil {
			t.Errorf("pod %s is being deleted after a refused eviction", p.Name)
		}
	})
	t.Run("the remaining replica still admits a relay secret and denies a bad one", func(t *testing.T) {
		before := front.Served()
		admitted(ctx, t, c.Client, good)
		denied(ctx, t, c.Client, bad)
		after := front.Served()
		if after[addrs[0]] != before[addrs[0]] {
			t.Errorf("the evicted replica still got connections: %v, then %v", before, after)
		}
		if after[addrs[1]] <= before[addrs[1]] {
			t.Errorf("the remaining replica got no connection: %v, then %v", before, after)
		}
	})
}

// podReady reports whether p's Ready condition is True.
func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// markReady writes p's status as a kubelet would once its container runs
// and passes its readiness probe.
func markReady(ctx context.Context, t *testing.T, c client.Client, p *corev1.Pod) {
	t.Helper()
	now := metav1.Now()
	p.Status.Phase = corev1.PodRunning
	p.Status.StartTime = &now
	p.Status.Conditions = []corev1.PodCondition{
		{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now},
		{Type: corev1.PodInitialized, Status: corev1.ConditionTrue, LastTransitionTime: now},
		{Type: corev1.ContainersReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
		{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
	}
	if err := c.Status().Update(ctx, p); err != nil {
		t.Fatalf("failed to mark pod %s ready: %v", p.Name, err)
	}
}

// secretsOfTable returns, from the shared table of relay secrets, a root
// every consumer admits and a signing secret every consumer refuses, as
// the Secrets a management cluster would hold.
func secretsOfTable(t *testing.T, fx *relaysecrettest.Fixture) (good, bad *corev1.Secret) {
	t.Helper()
	for _, c := range fx.Cases(t) {
		switch {
		case good == nil && c.OK && c.Kind == relaysecret.Root:
			good = &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: config.DefaultNamespace, Name: config.DefaultRootTLSSecret}, Data: c.Data}
		case bad == nil && !c.OK && c.Kind == relaysecret.Signing:
			bad = &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: config.DefaultNamespace, Name: config.DefaultSigningTLSSecret}, Type: corev1.SecretTypeTLS, Data: c.Data}
		}
	}
	if good == nil || bad == nil {
		t.Fatal("the relay-secret table has no usable root or no refused signing secret")
	}
	return good, bad
}

// admitted creates s (a copy) and fails t unless the webhook lets it in.
func admitted(ctx context.Context, t *testing.T, c client.Client, s *corev1.Secret, opts ...client.CreateOption) {
	t.Helper()
	if err := c.Create(ctx, s.DeepCopy(), opts...); err != nil {
		t.Errorf("create secret %s/%s: %v, want it admitted", s.Namespace, s.Name, err)
	}
}

// denied creates s (a copy) and fails t unless relay-webhook answers and
// denies it; a webhook that could not be called is a failure too.
func denied(ctx context.Context, t *testing.T, c client.Client, s *corev1.Secret) {
	t.Helper()
	err := c.Create(ctx, s.DeepCopy(), client.DryRunAll)
	var status apierrors.APIStatus
	if err == nil || !errors.As(err, &status) || !strings.Contains(err.Error(), "denied the request") {
		t.Errorf("create secret %s/%s: %v, want relay-webhook's denial", s.Namespace, s.Name, err)
	}
}
