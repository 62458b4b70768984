package fleet

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// defaultMetricsPort is where relay-server serves /metrics when its
// container names no port "metrics".
const defaultMetricsPort = 9091

// podFetchTimeout bounds the read of one pod's metrics.
const podFetchTimeout = 10 * time.Second

// PodFetch reads path from port of pod, through the API server's pod
// proxy in production.
type PodFetch func(ctx context.Context, pod *corev1.Pod, port int32, path string) ([]byte, error)

// ProxyFetch reads through the API server's pod proxy
// (pods/<name>:<port>/proxy/<path>), which reaches a pod's IP from the
// API server, so that relayctl needs no route into the cluster.
func ProxyFetch(cs kubernetes.Interface) PodFetch {
	return func(ctx context.Context, pod *corev1.Pod, port int32, path string) ([]byte, error) {
		data, err := cs.CoreV1().Pods(pod.Namespace).ProxyGet("http", pod.Name, strconv.Itoa(int(port)), path, nil).DoRaw(ctx)
		if err != nil {
			return nil, fmt.Errorf("failed to read /%s on port %d through the API server's pod proxy: %w", path, port, err)
		}
		return data, nil
	}
}

// PodMetricsOptions say where relay-server's pods are and how to read them.
type PodMetricsOptions struct {
	Client client.Reader
	// Namespace and Service name relay-server's Service, whose selector
	// finds its pods.
	Namespace, Service string
	Fetch              PodFetch
}

// PodMetrics returns a CheckOptions.Metrics that reads /metrics of every
// pod behind relay-server's Service, running or not, so that the streams
// of each replica are counted once: a Service proxy would reach one pod.
// It fails when there is no Service or no pod behind it; a pod that cannot
// be read is a page with its error.
func PodMetrics(o PodMetricsOptions) func(context.Context) ([]MetricsPage, error) {
	return func(ctx context.Context) ([]MetricsPage, error) {
		pods, err := serverPods(ctx, o.Client, o.Namespace, o.Service)
		if err != nil {
			return nil, err
		}
		pages := make([]MetricsPage, len(pods))
		var wg sync.WaitGroup
		for i := range pods {
			wg.Go(func() { pages[i] = readPod(ctx, o.Fetch, &pods[i]) })
		}
		wg.Wait()
		return pages, nil
	}
}

// serverPods lists the pods that service selects, by name.
func serverPods(ctx context.Context, c client.Reader, ns, service string) ([]corev1.Pod, error) {
	var svc corev1.Service
	switch err := c.Get(ctx, types.NamespacedName{Namespace: ns, Name: service}, &svc); {
	case apierrors.IsNotFound(err):
		return nil, fmt.Errorf("no Service %s/%s to find relay-server's pods by", ns, service)
	case err != nil:
		return nil, fmt.Errorf("failed to read Service %s/%s: %w", ns, service, err)
	}
	if len(svc.Spec.Selector) == 0 {
		return nil, fmt.Errorf("the Service %s/%s has no selector to find relay-server's pods by: give each replica's URL with --server-metrics", ns, service)
	}
	sel := labels.SelectorFromSet(svc.Spec.Selector)
	var pods corev1.PodList
	if err := c.List(ctx, &pods, client.InNamespace(ns), client.MatchingLabelsSelector{Selector: sel}); err != nil {
		return nil, fmt.Errorf("failed to list the pods of Service %s/%s (%s): %w", ns, service, sel, err)
	}
	if len(pods.Items) == 0 {
		return nil, fmt.Errorf("no pod in %s matches the selector %s of Service %s", ns, sel, service)
	}
	slices.SortFunc(pods.Items, func(a, b corev1.Pod) int { return strings.Compare(a.Name, b.Name) })
	return pods.Items, nil
}

// readPod reads pod's /metrics, or says why it cannot.
func readPod(ctx context.Context, fetch PodFetch, pod *corev1.Pod) MetricsPage {
	page := MetricsPage{Replica: pod.Name, Pod: true}
	phase := pod.Status.Phase
	switch {
	case phase == corev1.PodSucceeded || phase == corev1.PodFailed:
		page.Gone = true
		page.Err = fmt.Errorf("it has finished (%s%s)", phase, suffix(pod.Status.Reason))
		return page
	case pod.Status.PodIP == "":
		page.Err = fmt.Errorf("it has no IP yet (%s%s), so its metrics cannot be read", phase, suffix(pod.Status.Reason))
		return page
	}
	ctx, cancel := context.WithTimeout(ctx, podFetchTimeout)
	defer cancel()
	data, err := fetch(ctx, pod, metricsPort(pod), "metrics")
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("no answer within %s: %w", podFetchTimeout, err)
		}
		page.Err = err
		return page
	}
	page.Data = data
	return page
}

// metricsPort is pod's container port named "metrics", else
// defaultMetricsPort.
func metricsPort(pod *corev1.Pod) int32 {
	for _, c := range pod.Spec.Containers {
		for _, p := range c.Ports {
			if p.Name == "metrics" {
				return p.ContainerPort
			}
		}
	}
	return defaultMetricsPort
}

func suffix(reason string) string {
	if reason == "" {
		return ""
	}
	return ", " + reason
}
