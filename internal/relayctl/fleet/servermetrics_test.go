package fleet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshrelay/meshrelay/internal/testenv"
	"github.com/meshrelay/meshrelay/pkg/config"
)

// metricsPage is a relay-server metrics page with the given streams per
// cluster.
func metricsPage(streams map[string]ReplicaStreams) []byte {
	var b strings.Builder
	for _, kind := range []string{"push", "pull"} {
		fmt.Fprintf(&b, "# TYPE relay_%s_clients_connected gauge\n", kind)
		for cluster, r := range streams {
			n := r.Push
			if kind == "pull" {
				n = r.Pull
			}
			fmt.Fprintf(&b, "relay_%s_clients_connected{cluster=%q} %d\n", kind, cluster, n)
		}
	}
	return []byte(b.String())
}

// judgeMetrics runs the metrics part of Check on pages for clusters and
// returns the findings and each cluster's status.
func judgeMetrics(t *testing.T, metrics func(context.Context) ([]MetricsPage, error), clusters ...string) ([]Finding, map[string]ClusterStatus) {
	t.Helper()
	srv, ag := config.DefaultServer(), config.DefaultAgent()
	c := &checker{o: CheckOptions{Server: &srv, Agent: &ag, StreamsFrom: StreamsFromMetrics, Metrics: metrics}, r: &Report{}}
	if err := c.serverSide(t.Context()); err != nil {
		t.Fatal(err)
	}
	out := map[string]ClusterStatus{}
	for _, name := range clusters {
		st := ClusterStatus{Name: name}
		c.clusterStreams(Remote{Context: name, Name: name}, nil, &st)
		out[name] = st
	}
	return c.r.Findings, out
}

func findings(fs []Finding, cluster, check string) []Finding {
	var out []Finding
	for _, f := range fs {
		if f.Cluster == cluster && f.Check == check {
			out = append(out, f)
		}
	}
	return out
}

func TestMetricsOfEveryReplicaAreSummedPerCluster(t *testing.T) {
	pages := []MetricsPage{
		{Replica: "relay-server-a", Pod: true, Data: metricsPage(map[string]ReplicaStreams{"c1": {Push: 1, Pull: 1}, "c2": {Push: 1}})},
		{Replica: "relay-server-b", Pod: true, Data: metricsPage(map[string]ReplicaStreams{"c1": {Push: 1, Pull: 1}, "c2": {Pull: 1}, "c3": {}})},
		{Replica: "relay-server-c", Pod: true, Err: errors.New("failed to read /metrics on port 9091 through the API server's pod proxy: connection refused")},
		{Replica: "relay-server-d", Pod: true, Gone: true, Err: errors.New("it has finished (Failed, Evicted)")},
	}
	fs, clusters := judgeMetrics(t, func(context.Context) ([]MetricsPage, error) { return pages, nil }, "c1", "c2", "c3")

	for _, tc := range []struct {
		name, cluster string
		status        Status
		want          string
		replicas      string
		push, pull    int
	}{
		{"1+1 push and 1+1 pull on two replicas read 2 and 2", "c1", OK,
			"2 push and 2 pull streams, on relay-server-a (1 push, 1 pull), relay-server-b (1 push, 1 pull) (the metrics of 1 replica(s) could not be read, see above)", "relay-server-a,relay-server-b", 2, 2},
		{"push on one replica and pull on another pass: the want of 1 each is judged on the sum", "c2", OK,
			"1 push and 1 pull streams, on relay-server-a (1 push, 0 pull), relay-server-b (0 push, 1 pull)", "relay-server-a,relay-server-b", 1, 1},
		{"no streams on any replica is a problem with where to look", "c3", Problem,
			"0 push and 0 pull streams on relay-server (the metrics of 1 replica(s) could not be read, see above), want at least 1 each: check the agent's logs (kubectl --context c3 -n gloo-mesh logs deploy/relay-agent)", "", 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := clusters[tc.cluster]
			if got := replicaNames(st.Replicas); got != tc.replicas || st.Pushing != tc.push || st.Pulling != tc.pull || st.StreamsFrom != StreamsFromMetrics {
				t.Errorf("cluster status: replicas %q, %d push, %d pull, from %q; want %q, %d, %d, from metrics", got, st.Pushing, st.Pulling, st.StreamsFrom, tc.replicas, tc.push, tc.pull)
			}
			f := findings(fs, tc.cluster, "relay streams")
			if len(f) != 1 || f[0].Status != tc.status || !strings.Contains(f[0].Detail, tc.want) {
				t.Errorf("relay streams findings = %+v, want one %s saying %q", f, tc.status, tc.want)
			}
		})
	}

	t.Run("a pod that cannot be read is a problem naming it with the fix, a finished pod a warning", func(t *testing.T) {
		want := map[Status][]string{
			Problem: {"pod gloo-mesh/relay-server-c: failed to read /metrics on port 9091 through the API server's pod proxy: connection refused: is it running and ready (kubectl -n gloo-mesh describe pod relay-server-c; kubectl -n gloo-mesh logs relay-server-c), and does a NetworkPolicy let the API server reach its metrics port? (kubectl -n gloo-mesh get networkpolicy)"},
			Warning: {"pod gloo-mesh/relay-server-d: it has finished (Failed, Evicted); it holds no streams: delete it (kubectl -n gloo-mesh delete pod relay-server-d)"},
			OK:      {"read from 2 of 4 replica(s)"},
		}
		got := map[Status][]string{}
		for _, f := range findings(fs, "management", "relay-server metrics") {
			got[f.Status] = append(got[f.Status], f.Detail)
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("relay-server metrics findings:\n%v\nwant\n%v", got, want)
		}
	})

	t.Run("when no replica can be read, that is the problem and no cluster is judged", func(t *testing.T) {
		fs, clusters := judgeMetrics(t, func(context.Context) ([]MetricsPage, error) {
			return []MetricsPage{{Replica: "http://127.0.0.1:1/metrics", Err: errors.New("failed to read relay-server metrics: connection refused")}}, nil
		}, "c1")
		f := findings(fs, "management", "relay-server metrics")
		if len(f) != 1 || f[0].Status != Problem || f[0].Detail != "http://127.0.0.1:1/metrics: failed to read relay-server metrics: connection refused: is relay-server running? (kubectl -n gloo-mesh get deploy gloo-mesh-mgmt-server)" {
			t.Errorf("relay-server metrics findings = %+v", f)
		}
		if f := findings(fs, "c1", "relay streams"); len(f) != 0 || clusters["c1"].StreamsFrom != "" {
			t.Errorf("c1 was judged on no metrics: %+v", f)
		}
		fs, _ = judgeMetrics(t, func(context.Context) ([]MetricsPage, error) {
			return nil, errors.New("no pod in gloo-mesh matches the selector app.kubernetes.io/name=relay-server of Service gloo-mesh-mgmt-server")
		}, "c1")
		if f := findings(fs, "management", "relay-server metrics"); len(f) != 1 || f[0].Status != Problem || !strings.HasSuffix(f[0].Detail, "of Service gloo-mesh-mgmt-server: is relay-server running? (kubectl -n gloo-mesh get deploy gloo-mesh-mgmt-server)") {
			t.Errorf("relay-server metrics findings = %+v", f)
		}
	})
}

// serverPod creates a pod of relay-server's Deployment named name, with a
// container port named metrics when port is not 0, then writes its status
// as the kubelet would.
func serverPod(t *testing.T, c client.Client, name string, labels map[string]string, port int32, status corev1.PodStatus) {
	t.Helper()
	ctr := corev1.Container{Name: "relay-server", Image: "ghcr.io/meshrelay/meshrelay:test", Ports: []corev1.ContainerPort{{Name: "grpc", ContainerPort: 9900}}}
	if port != 0 {
		ctr.Ports = append(ctr.Ports, corev1.ContainerPort{Name: "metrics", ContainerPort: port})
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: config.DefaultNamespace, Name: name, Labels: labels}, Spec: corev1.PodSpec{Containers: []corev1.Container{ctr}}}
	if err := c.Create(t.Context(), pod); err != nil {
		t.Fatalf("failed to create pod %s: %v", name, err)
	}
	pod.Status = status
	if status.PodIP != "" {
		pod.Status.PodIPs = []corev1.PodIP{{IP: status.PodIP}}
	}
	if err := c.Status().Update(t.Context(), pod); err != nil {
		t.Fatalf("failed to write the status of pod %s: %v", name, err)
	}
}

// nonLoopbackIPv4 is an IPv4 address of this machine that the API server
// agrees to proxy to (not loopback, not link-local), or "".
func nonLoopbackIPv4(t *testing.T) string {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if ip := n.IP.To4(); ip != nil && !ip.IsLoopback() && !ip.IsLinkLocalUnicast() {
				return ip.String()
			}
		}
	}
	return ""
}

// serveStreams serves a Prometheus registry holding relay-server's stream
// gauges with streams, on ip, and returns its port.
func serveStreams(t *testing.T, ip string, streams map[string]ReplicaStreams) int32 {
	t.Helper()
	reg := prometheus.NewRegistry()
	push := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "relay_push_clients_connected"}, []string{"cluster"})
	pull := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "relay_pull_clients_connected"}, []string{"cluster"})
	reg.MustRegister(push, pull)
	for cluster, r := range streams {
		push.WithLabelValues(cluster).Set(float64(r.Push))
		pull.WithLabelValues(cluster).Set(float64(r.Pull))
	}
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return int32(l.Addr().(*net.TCPAddr).Port)
}

// TestPodMetricsReadsEveryPodBehindTheService creates relay-server's
// Service and pods on a local cluster, and reads each pod's metrics: found
// through the Service's selector, each on its metrics port; then through
// the API server's pod proxy for real, summed per cluster.
func TestPodMetricsReadsEveryPodBehindTheService(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Names: []string{"mgmt"}})
	mgmt := env.Clusters[0]
	c := mgmt.Client
	ns := config.DefaultNamespace
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	metrics := func() PodMetricsOptions {
		return PodMetricsOptions{Client: c, Namespace: ns, Service: "gloo-mesh-mgmt-server"}
	}
	if _, err := PodMetrics(metrics())(ctx); err == nil || err.Error() != "no Service gloo-mesh/gloo-mesh-mgmt-server to find relay-server's pods by" {
		t.Errorf("without a Service: %v", err)
	}
	selector := map[string]string{"app.kubernetes.io/name": "relay-server"}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "gloo-mesh-mgmt-server"},
		Spec: corev1.ServiceSpec{Selector: selector, Ports: []corev1.ServicePort{{Name: "metrics", Port: 9091}}}}
	if err := c.Create(ctx, svc); err != nil {
		t.Fatal(err)
	}
	if _, err := PodMetrics(metrics())(ctx); err == nil || !strings.Contains(err.Error(), "no pod in gloo-mesh matches the selector app.kubernetes.io/name=relay-server of Service gloo-mesh-mgmt-server") {
		t.Errorf("without pods: %v", err)
	}

	t.Run("every pod the selector matches is read on its metrics port, running or not", func(t *testing.T) {
		running := corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.1.0.1"}
		serverPod(t, c, "relay-server-a", selector, 9191, running)
		running.PodIP = "10.1.0.2"
		serverPod(t, c, "relay-server-b", selector, 0, running)
		serverPod(t, c, "relay-server-c", selector, 9091, corev1.PodStatus{Phase: corev1.PodPending, Reason: "Unschedulable"})
		serverPod(t, c, "relay-server-d", selector, 9091, corev1.PodStatus{Phase: corev1.PodFailed, Reason: "Evicted"})
		running.PodIP = "10.1.0.3"
		serverPod(t, c, "other-app", map[string]string{"app.kubernetes.io/name": "relay-agent"}, 9091, running)

		var mu sync.Mutex
		read := map[string]string{}
		o := metrics()
		o.Fetch = func(_ context.Context, pod *corev1.Pod, port int32, path string) ([]byte, error) {
			mu.Lock()
			defer mu.Unlock()
			read[pod.Name] = fmt.Sprintf("%s:%d/%s", pod.Status.PodIP, port, path)
			if pod.Name == "relay-server-b" {
				return nil, errors.New("connection refused")
			}
			return metricsPage(map[string]ReplicaStreams{"c1": {Push: 1, Pull: 1}}), nil
		}
		pages, err := PodMetrics(o)(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if want := "map[relay-server-a:10.1.0.1:9191/metrics relay-server-b:10.1.0.2:9091/metrics]"; fmt.Sprint(read) != want {
			t.Errorf("read %v, want %s", read, want)
		}
		var got []string
		for _, p := range pages {
			got = append(got, fmt.Sprintf("%s pod=%v gone=%v err=%v data=%v", p.Replica, p.Pod, p.Gone, p.Err, len(p.Data) > 0))
		}
		want := []string{
			"relay-server-a pod=true gone=false err=<nil> data=true",
			"relay-server-b pod=true gone=false err=connection refused data=false",
			"relay-server-c pod=true gone=false err=it has no IP yet (Pending, Unschedulable), so its metrics cannot be read data=false",
			"relay-server-d pod=true gone=true err=it has finished (Failed, Evicted) data=false",
		}
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("pages:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
		for _, name := range []string{"relay-server-a", "relay-server-b", "relay-server-c", "relay-server-d", "other-app"} {
			if err := c.Delete(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}); err != nil {
				t.Fatal(err)
			}
		}
	})

	t.Run("through the API server's pod proxy, two replicas' streams are summed", func(t *testing.T) {
		ip := nonLoopbackIPv4(t)
		if ip == "" {
			t.Skip("this machine has no IPv4 address but loopback, and the API server refuses to proxy to loopback: the pod proxy is not exercised here; the test above covers discovery and reading with an injected fetch")
		}
		portA := serveStreams(t, ip, map[string]ReplicaStreams{"c1": {Push: 1, Pull: 1}, "c2": {Push: 1}})
		portB := serveStreams(t, ip, map[string]ReplicaStreams{"c1": {Push: 1, Pull: 1}, "c2": {Pull: 1}})
		running := corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip}
		serverPod(t, c, "relay-server-a", selector, portA, running)
		serverPod(t, c, "relay-server-b", selector, portB, running)
		cs, err := kubernetes.NewForConfig(mgmt.Config)
		if err != nil {
			t.Fatal(err)
		}
		o := metrics()
		o.Fetch = ProxyFetch(cs)
		fs, clusters := judgeMetrics(t, PodMetrics(o), "c1", "c2")
		if f := findings(fs, "management", "relay-server metrics"); len(f) != 1 || f[0].Status != OK || f[0].Detail != "read from 2 of 2 replica(s)" {
			t.Errorf("relay-server metrics findings = %+v, want both pods read", f)
		}
		for name, want := range map[string]string{
			"c1": "2 push and 2 pull streams, on relay-server-a (1 push, 1 pull), relay-server-b (1 push, 1 pull)",
			"c2": "1 push and 1 pull streams, on relay-server-a (1 push, 0 pull), relay-server-b (0 push, 1 pull)",
		} {
			if f := findings(fs, name, "relay streams"); len(f) != 1 || f[0].Status != OK || f[0].Detail != want {
				t.Errorf("%s: relay streams findings = %+v, want OK %q", name, f, want)
			}
		}
		if st := clusters["c1"]; st.Pushing != 2 || st.Pulling != 2 {
			t.Errorf("c1 = %+v, want 2 push and 2 pull", st)
		}
	})
}
