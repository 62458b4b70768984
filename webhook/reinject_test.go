package webhook_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshrelay/meshrelay/internal/localmesh"
	"github.com/meshrelay/meshrelay/internal/testenv"
	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/webhook"
	"github.com/meshrelay/meshrelay/webhook/injector"
)

// TestAnInstallInOneApplyLeavesNoAgentPodUninjected applies the workload
// overlay as users do, in one kubectl apply, on a cluster whose
// kube-controller-manager makes the agent Deployment's pods at once, and
// starts relay-webhook only afterwards, as its ServiceAccount (a token from
// TokenRequest, the overlay's RBAC). The pods made before the injection was
// in force carry no settings; nobody touches them, and relay-webhook evicts
// them so that their ReplicaSet makes them again, injected.
func TestAnInstallInOneApplyLeavesNoAgentPodUninjected(t *testing.T) {
	e := installBeforeWebhook(t, nil)
	testenv.Eventually(t, "the ReplicaSet's pods are made again, injected", 2*time.Minute, func() error {
		if err := e.stopped(); err != nil {
			return err
		}
		pods, err := e.agents()
		if err != nil {
			return err
		}
		var problems []string
		for _, p := range pods {
			if name, ok := e.uninjected[p.UID]; ok {
				problems = append(problems, "pod "+name+" made before the injection is still there")
				continue
			}
			if missing := injectedLacks(&p); len(missing) > 0 {
				problems = append(problems, fmt.Sprintf("pod %s lacks %s", p.Name, strings.Join(missing, ", ")))
			}
		}
		if len(pods) != 2 {
			problems = append(problems, fmt.Sprintf("%d agent pods, want 2", len(pods)))
		}
		if len(problems) > 0 {
			return errors.New(strings.Join(problems, "; "))
		}
		return nil
	})

	// One eviction for each pod made before the injection, at once: a pod
	// its ReplicaSet made again came injected, so no round backs off.
	lines := e.logLines()
	if n := count(lines, "evicted an agent pod"); n != len(e.uninjected) {
		t.Errorf("relay-webhook logged %d evictions, want %d (one per pod made before the injection):\n%s",
			n, len(e.uninjected), strings.Join(lines, "\n"))
	}
	if n := count(lines, "still lacks the injection"); n > 0 {
		t.Errorf("relay-webhook backed off %d times although its pods came back injected:\n%s", n, strings.Join(lines, "\n"))
	}
}

// TestAgentPodsAreNotChurnedWhenTheInjectionCannotWork installs the
// workload overlay with a MutatingWebhookConfiguration that sends no agent
// pod to relay-webhook (its objectSelector changed): every pod the
// ReplicaSet makes again still lacks the injection. relay-webhook evicts the
// pods made before it started at once, then backs off (5s, then 10s) and
// says why, instead of evicting as fast as the ReplicaSet makes pods.
func TestAgentPodsAreNotChurnedWhenTheInjectionCannotWork(t *testing.T) {
	e := installBeforeWebhook(t, []localmesh.Patch{{Kind: "MutatingWebhookConfiguration", Name: config.DefaultMutatingWebhook, Patch: `- op: replace
  path: /webhooks/0/objectSelector
  value: {matchLabels: {meshrelay.dev/inject: nobody}}
`}})
	testenv.Eventually(t, "relay-webhook evicts a pod made again and says why it is not injected", time.Minute, func() error {
		if err := e.stopped(); err != nil {
			return err
		}
		lines := e.logLines()
		if count(lines, "still lacks the injection") == 0 || count(lines, "evicted an agent pod") < 3 {
			return fmt.Errorf("%d evictions, no backoff message yet", count(lines, "evicted an agent pod"))
		}
		return nil
	})
	// The second round (the two pods made again, 5s after the first) is
	// under way; the third is due 10s after it, not in the next 5s.
	time.Sleep(5 * time.Second)
	lines := e.logLines()
	if n := count(lines, "evicted an agent pod"); n > 4 {
		t.Errorf("relay-webhook evicted %d pods, want 4 before the third round (the install's two, then two after 5s):\n%s",
			n, strings.Join(lines, "\n"))
	}
}

// reinjectEnv is a workload cluster on which the workload overlay was
// applied before relay-webhook ran, and that relay-webhook.
type reinjectEnv struct {
	ctx        context.Context
	cluster    *testenv.Cluster
	uninjected map[types.UID]string
	done       chan error
	mu         sync.Mutex
	lines      []string
}

// installBeforeWebhook applies the workload overlay with patches in one
// kubectl apply, waits for the agent Deployment's two pods, which the
// webhook did not inject since it does not run yet, and then starts
// relay-webhook as its ServiceAccount, recording its log.
func installBeforeWebhook(t *testing.T, patches []localmesh.Patch) *reinjectEnv {
	t.Helper()
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	env := testenv.Start(t, testenv.Options{
		Names:             []string{"workload"},
		ControllerManager: true,
		CRDDirs:           []string{filepath.Join(root, "manifests", "crds"), filepath.Join(root, "hack", "crds", "cert-manager")},
	})
	ctx, cancel := context.WithCancel(t.Context())
	e := &reinjectEnv{ctx: ctx, cluster: env.Clusters[0], uninjected: map[types.UID]string{}, done: make(chan error, 1)}
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	mesh := localmesh.New(env, root, "", t.TempDir())
	if err := mesh.InstallPatched(ctx, e.cluster.Name, "workload", nil, patches, addr); err != nil {
		cancel()
		t.Fatal(err)
	}

	// The race: the Deployment comes before the webhook configurations in
	// the apply, and its pods are admitted before the API server calls the
	// mutating webhook. Were it to call it first, relay-webhook not yet
	// serving would refuse them (failurePolicy Fail) and nothing here would
	// be left uninjected.
	testenv.Eventually(t, "the Deployment's two pods exist, made before the injection was in force", time.Minute, func() error {
		pods, err := e.agents()
		if err != nil {
			return err
		}
		if len(pods) != 2 {
			return fmt.Errorf("%d agent pods", len(pods))
		}
		// The Deployment itself mounts the trust bundle; the secret
		// volumes come only from the injection.
		for _, p := range pods {
			if p.Annotations[injector.InjectedAnnotation] == "" && !slices.ContainsFunc(p.Spec.Volumes, func(v corev1.Volume) bool { return v.Name == injector.ClientVolume }) {
				e.uninjected[p.UID] = p.Name
			}
		}
		if len(e.uninjected) == 0 {
			return errors.New("both pods are injected, although relay-webhook does not run yet")
		}
		return nil
	})
	t.Logf("uninjected before relay-webhook started: %v", e.uninjected)

	kubeconfig := filepath.Join(t.TempDir(), "relay-webhook.kubeconfig")
	if err := localmesh.ServiceAccountKubeconfig(ctx, e.cluster, config.DefaultWebhookNamespace, "relay-webhook", kubeconfig); err != nil {
		cancel()
		t.Fatal(err)
	}
	asWebhook, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	mlis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	cfg := config.DefaultWebhook()
	cfg.Cluster, cfg.ServerAddress, cfg.ListenAddress = "cluster-1", "gloo-mesh-mgmt-server.gloo-mesh:9900", addr
	log := funcr.New(func(prefix, args string) {
		e.mu.Lock()
		defer e.mu.Unlock()
		e.lines = append(e.lines, prefix+" "+args)
	}, funcr.Options{})
	srv, err := webhook.New(webhook.Options{
		Config: cfg, RESTConfig: asWebhook, Log: log,
		ServingIPs: []net.IP{net.IPv4(127, 0, 0, 1)}, MetricsListener: mlis,
	})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	go func() { e.done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-e.done:
			if err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("relay-webhook: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Error("relay-webhook did not stop within 20s")
		}
	})
	return e
}

// agents returns the agent pods that are not being deleted.
func (e *reinjectEnv) agents() ([]corev1.Pod, error) {
	var list corev1.PodList
	err := e.cluster.Client.List(e.ctx, &list, client.InNamespace(config.DefaultNamespace), client.MatchingLabels{"app.kubernetes.io/name": "relay-agent"})
	var live []corev1.Pod
	for _, p := range list.Items {
		if p.DeletionTimestamp == nil {
			live = append(live, p)
		}
	}
	return live, err
}

// stopped returns why relay-webhook stopped, or nil while it runs.
func (e *reinjectEnv) stopped() error {
	select {
	case err := <-e.done:
		e.done <- err
		return fmt.Errorf("relay-webhook stopped: %v", err)
	default:
		return nil
	}
}

// logLines returns what relay-webhook logged so far.
func (e *reinjectEnv) logLines() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.lines)
}

func count(lines []string, substr string) int {
	n := 0
	for _, l := range lines {
		if strings.Contains(l, substr) {
			n++
		}
	}
	return n
}

// injectedLacks returns what of the injection pod lacks: the annotation,
// a volume of each relay secret, their mounts and the trust bundle's, the
// agent's settings.
func injectedLacks(p *corev1.Pod) []string {
	var missing []string
	if p.Annotations[injector.InjectedAnnotation] != "true" {
		missing = append(missing, "annotation "+injector.InjectedAnnotation)
	}
	for _, v := range []string{injector.ClientVolume, injector.RootVolume, injector.TokenVolume} {
		if !slices.ContainsFunc(p.Spec.Volumes, func(pv corev1.Volume) bool { return pv.Name == v && pv.Secret != nil }) {
			missing = append(missing, "volume "+v)
		}
	}
	ctr := p.Spec.Containers[0]
	for _, m := range []string{injector.ClientMount, injector.RootMount, injector.TokenMount, injector.TrustBundleMount} {
		if !slices.ContainsFunc(ctr.VolumeMounts, func(vm corev1.VolumeMount) bool { return vm.MountPath == m }) {
			missing = append(missing, "mount "+m)
		}
	}
	for _, e := range []string{
		config.EnvCluster + "=cluster-1", config.EnvServerAddress + "=gloo-mesh-mgmt-server.gloo-mesh:9900",
		config.EnvTrustBundleDir + "=" + injector.TrustBundleMount,
	} {
		if !slices.ContainsFunc(ctr.Env, func(ev corev1.EnvVar) bool { return ev.Name+"="+ev.Value == e }) {
			missing = append(missing, "env "+e)
		}
	}
	return missing
}
