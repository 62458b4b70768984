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
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	env := testenv.Start(t, testenv.Options{
		Names:             []string{"workload"},
		ControllerManager: true,
		CRDDirs:           []string{filepath.Join(root, "manifests", "crds"), filepath.Join(root, "hack", "crds", "cert-manager")},
	})
	c := env.Clusters[0]
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	mesh := localmesh.New(env, root, "", t.TempDir())
	if err := mesh.Install(ctx, c.Name, "workload", nil, addr); err != nil {
		t.Fatal(err)
	}

	agents := func() ([]corev1.Pod, error) {
		var list corev1.PodList
		err := c.Client.List(ctx, &list, client.InNamespace(config.DefaultNamespace), client.MatchingLabels{"app.kubernetes.io/name": "relay-agent"})
		var live []corev1.Pod
		for _, p := range list.Items {
			if p.DeletionTimestamp == nil {
				live = append(live, p)
			}
		}
		return live, err
	}
	// The race: the Deployment comes before the webhook configurations in
	// the apply, and its pods are admitted before the API server calls the
	// mutating webhook. Were it to call it first, relay-webhook not yet
	// serving would refuse them (failurePolicy Fail) and nothing here would
	// be left uninjected.
	uninjected := map[types.UID]string{}
	testenv.Eventually(t, "the Deployment's two pods exist, made before the injection was in force", time.Minute, func() error {
		pods, err := agents()
		if err != nil {
			return err
		}
		if len(pods) != 2 {
			return fmt.Errorf("%d agent pods", len(pods))
		}
		for _, p := range pods {
			if p.Annotations[injector.InjectedAnnotation] == "" && len(p.Spec.Volumes) == 0 {
				uninjected[p.UID] = p.Name
			}
		}
		if len(uninjected) == 0 {
			return errors.New("both pods are injected, although relay-webhook does not run yet")
		}
		return nil
	})
	t.Logf("uninjected before relay-webhook started: %v", uninjected)

	kubeconfig := filepath.Join(t.TempDir(), "relay-webhook.kubeconfig")
	if err := localmesh.ServiceAccountKubeconfig(ctx, c, config.DefaultWebhookNamespace, "relay-webhook", kubeconfig); err != nil {
		t.Fatal(err)
	}
	asWebhook, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	mlis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.DefaultWebhook()
	cfg.Cluster, cfg.ServerAddress, cfg.ListenAddress = "cluster-1", "gloo-mesh-mgmt-server.gloo-mesh:9900", addr
	var logMu sync.Mutex
	var logLines []string
	log := funcr.New(func(prefix, args string) {
		logMu.Lock()
		defer logMu.Unlock()
		logLines = append(logLines, prefix+" "+args)
	}, funcr.Options{})
	srv, err := webhook.New(webhook.Options{
		Config: cfg, RESTConfig: asWebhook, Log: log,
		ServingIPs: []net.IP{net.IPv4(127, 0, 0, 1)}, MetricsListener: mlis,
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("relay-webhook: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Error("relay-webhook did not stop within 20s")
		}
	})

	testenv.Eventually(t, "the ReplicaSet's pods are made again, injected", 2*time.Minute, func() error {
		select {
		case err := <-done:
			return fmt.Errorf("relay-webhook stopped: %v", err)
		default:
		}
		pods, err := agents()
		if err != nil {
			return err
		}
		var problems []string
		for _, p := range pods {
			if name, ok := uninjected[p.UID]; ok {
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
	logMu.Lock()
	defer logMu.Unlock()
	evictions := 0
	for _, l := range logLines {
		if strings.Contains(l, "evicted an agent pod") {
			evictions++
		}
		if strings.Contains(l, "still lacks the injection") {
			t.Errorf("relay-webhook backed off a pod made after an eviction: %s", l)
		}
	}
	if evictions != len(uninjected) {
		t.Errorf("relay-webhook logged %d evictions, want %d (one per pod made before the injection):\n%s",
			evictions, len(uninjected), strings.Join(logLines, "\n"))
	}
}

// injectedLacks returns what of the injection pod lacks: the annotation,
// a volume of each relay secret, their mounts, the agent's settings.
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
	for _, m := range []string{injector.ClientMount, injector.RootMount, injector.TokenMount} {
		if !slices.ContainsFunc(ctr.VolumeMounts, func(vm corev1.VolumeMount) bool { return vm.MountPath == m }) {
			missing = append(missing, "mount "+m)
		}
	}
	for _, e := range []string{config.EnvCluster + "=cluster-1", config.EnvServerAddress + "=gloo-mesh-mgmt-server.gloo-mesh:9900"} {
		if !slices.ContainsFunc(ctr.Env, func(ev corev1.EnvVar) bool { return ev.Name+"="+ev.Value == e }) {
			missing = append(missing, "env "+e)
		}
	}
	return missing
}
