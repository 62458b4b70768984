// Command demo is make demo: it starts a local management cluster and two
// workload clusters, installs meshrelay with the overlays, registers the
// clusters with relayctl and shows, step by step, what happens: bootstrap,
// the relay metrics, relayctl check, a bad secret denied by kubectl, an
// injected agent pod and a certificate rotation. It stops everything at the
// end, and on Ctrl-C.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshrelay/meshrelay/internal/command"
	"github.com/meshrelay/meshrelay/internal/localmesh"
	"github.com/meshrelay/meshrelay/internal/testenv"
	"github.com/meshrelay/meshrelay/webhook/injector"
)

func main() {
	keep := flag.Bool("keep", false, "leave the clusters and processes running until Ctrl-C after the demo")
	flag.Parse()
	// The demo's own Kubernetes clients (controller-runtime's and
	// client-go's) log through the binaries' logger: problems only, on
	// stderr, and no "log.SetLogger(...) was never called" trace.
	(&command.LogFlags{}).Logger()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	start := time.Now()
	err := run(ctx, *keep)
	switch {
	case errors.Is(err, context.Canceled):
		fmt.Println("\ninterrupted: everything is stopped")
		os.Exit(130)
	case err != nil:
		fmt.Fprintf(os.Stderr, "\ndemo failed: %v\n", err)
		os.Exit(1)
	}
	fmt.Printf("\ndemo finished in %s; everything is stopped\n", time.Since(start).Round(time.Second))
}

var workloads = []string{"cluster-1", "cluster-2"}

const steps = 9

func step(n int, format string, args ...any) {
	fmt.Printf("\n==> [%d/%d] %s\n", n, steps, fmt.Sprintf(format, args...))
}

func say(format string, args ...any) { fmt.Printf("    "+format+"\n", args...) }

func indent(s string) string {
	s = strings.TrimRight(s, "\n")
	return "      " + strings.ReplaceAll(s, "\n", "\n      ")
}

func run(ctx context.Context, keep bool) (err error) {
	root, err := testenv.RepoRoot()
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "meshrelay-demo-")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			fmt.Fprintf(os.Stderr, "\nthe clusters' and binaries' logs are kept in %s\n", dir)
			return
		}
		os.RemoveAll(dir)
	}()

	step(1, "Building relay-server, relay-agent, relay-webhook and relayctl")
	bins := filepath.Join(root, "bin")
	if err := localmesh.BuildBinaries(ctx, root, bins); err != nil {
		return err
	}
	say("built into %s", bins)

	step(2, "Starting a local management cluster and two workload clusters (etcd, kube-apiserver, kube-controller-manager)")
	t0 := time.Now()
	env, err := testenv.StartIn(filepath.Join(dir, "clusters"), testenv.Options{
		Names:             append([]string{"mgmt"}, workloads...),
		ControllerManager: true,
		CRDDirs:           []string{filepath.Join(root, "manifests", "crds"), filepath.Join(root, "hack", "crds", "cert-manager")},
	})
	if env != nil {
		defer func() {
			if serr := env.Stop(); serr != nil && err == nil {
				err = serr
			}
		}()
	}
	if err != nil {
		return err
	}
	say("three clusters up in %s; kubeconfig %s (contexts mgmt, cluster-1, cluster-2)", time.Since(t0).Round(time.Second), env.Kubeconfig)
	logs := filepath.Join(dir, "logs")
	if err := os.MkdirAll(logs, 0o755); err != nil {
		return err
	}
	mesh := localmesh.New(env, root, bins, logs)
	defer func() {
		if serr := mesh.Stop(); serr != nil && err == nil {
			err = serr
		}
	}()

	step(3, "Installing: kubectl apply of manifests/overlays/management and .../workload; the binaries run as local processes")
	addrs := map[string]string{}
	for _, c := range env.Clusters {
		if addrs[c.Name], err = testenv.FreeAddr(); err != nil {
			return err
		}
	}
	if err := mesh.Install(ctx, "mgmt", "management", nil, addrs["mgmt"]); err != nil {
		return err
	}
	if _, err := mesh.StartWebhook(ctx, "mgmt", "", addrs["mgmt"]); err != nil {
		return err
	}
	// One-minute client certificates, so that a rotation happens during
	// the demo (the default is a year).
	if _, err := mesh.StartServer(ctx, "mgmt", "--client-certificate-ttl", "1m"); err != nil {
		return err
	}
	say("mgmt: relay-webhook and relay-server running; relay-server created the root, the signing CA, its certificate and the token:")
	out, _, err := env.Kubectl(ctx, "", "--context", "mgmt", "-n", "gloo-mesh", "get", "secrets")
	if err != nil {
		return err
	}
	fmt.Println(indent(out))
	for _, c := range workloads {
		if err := mesh.Install(ctx, c, "workload", map[string]string{"MESHRELAY_CLUSTER": c, "MESHRELAY_SERVER_ADDRESS": mesh.ServerAddr}, addrs[c]); err != nil {
			return err
		}
		if _, err := mesh.StartWebhook(ctx, c, c, addrs[c]); err != nil {
			return err
		}
		say("%s: workload overlay applied, relay-webhook running", c)
	}

	step(4, "Registering the workload clusters: relayctl register")
	for _, c := range workloads {
		stdout, stderr, code := mesh.Relayctl(ctx, "register", c, "--context", "mgmt", "--remote-context", c)
		if code != 0 {
			return fmt.Errorf("relayctl register %s: %s", c, stderr)
		}
		say("$ relayctl register %s --context mgmt --remote-context %s", c, c)
		fmt.Println(indent(stdout))
	}

	step(5, "Agents bootstrap with their clusters' own single-use tokens and connect over mutual TLS")
	metrics := "http://" + mesh.ServerMetrics + "/metrics"
	for _, c := range workloads {
		if _, _, err := mesh.StartAgent(c, c); err != nil {
			return err
		}
	}
	for _, c := range workloads {
		if err := waitFor(ctx, 90*time.Second, c+" connected", func() error {
			for _, g := range []string{"relay_push_clients_connected", "relay_pull_clients_connected"} {
				if v := testenv.MetricValue(testenv.ScrapeMetric(metrics, g+`{cluster="`+c+`"}`)); v != 1 {
					return fmt.Errorf("%s = %v", g, v)
				}
			}
			return nil
		}); err != nil {
			return err
		}
	}
	say("relay-server's metrics, for every cluster:")
	for _, m := range []string{`relay_certificates_issued_total{call="bootstrap"}`, "relay_push_clients_connected", "relay_pull_clients_connected"} {
		for _, line := range metricLines(metrics, m) {
			say("  %s", line)
		}
	}
	// The same, as relay-server writes it into each KubernetesCluster's
	// status: which replica holds the streams, the certificate, the agent.
	if err := waitFor(ctx, 30*time.Second, "KubernetesCluster status says Connected", func() error {
		out, _, err := env.Kubectl(ctx, "", "--context", "mgmt", "-n", "gloo-mesh", "get", "kubernetesclusters",
			"-o", `jsonpath={range .items[*]}{.metadata.name}={.status.conditions[?(@.type=="Connected")].status}{" "}{end}`)
		if err != nil {
			return err
		}
		for _, c := range workloads {
			if !strings.Contains(out, c+"=True") {
				return fmt.Errorf("%s not Connected yet: %s", c, out)
			}
		}
		return nil
	}); err != nil {
		return err
	}
	table, _, err := env.Kubectl(ctx, "", "--context", "mgmt", "-n", "gloo-mesh", "get", "kubernetesclusters", "-o", "wide")
	if err != nil {
		return err
	}
	say("$ kubectl get kubernetesclusters -n gloo-mesh -o wide")
	fmt.Println(indent(table))

	step(6, "relayctl check: registration, streams, secrets and expiry across the three clusters")
	checkArgs := []string{"check", "--context", "mgmt", "--remote-context", "cluster-1", "--remote-context", "cluster-2"}
	stdout, stderr, code := mesh.Relayctl(ctx, checkArgs...)
	say("$ relayctl check --context mgmt --remote-context cluster-1 --remote-context cluster-2")
	fmt.Println(indent(stdout + stderr))
	if code != 0 {
		return fmt.Errorf("relayctl check found problems")
	}

	step(7, "A bad secret is denied by kubectl: a client certificate for cluster-9 applied on cluster-1")
	if err := applyWrongSAN(ctx, mesh); err != nil {
		return err
	}

	step(8, "An injected agent pod: relay-webhook mounted the relay secrets and set the agent's settings")
	if err := showInjectedPod(ctx, env, logs, "cluster-1", workloads); err != nil {
		return err
	}

	step(9, "A rotation: the one-minute certificates are renewed by each agent's leader, streams stay up")
	opened := map[string]string{}
	for _, c := range workloads {
		opened[c] = firstLine(metricLines(metrics, `relay_streams_opened_total{cluster="`+c+`",stream="push"}`))
	}
	if err := waitFor(ctx, 3*time.Minute, "two renewals", func() error {
		if v := testenv.MetricValue(testenv.ScrapeMetric(metrics, `relay_certificates_issued_total{call="renew"}`)); v < 2 {
			return fmt.Errorf("renewals = %v", v)
		}
		return nil
	}); err != nil {
		return err
	}
	for _, line := range metricLines(metrics, `relay_certificates_issued_total{call="renew"}`) {
		say("  %s", line)
	}
	for _, c := range workloads {
		now := firstLine(metricLines(metrics, `relay_streams_opened_total{cluster="`+c+`",stream="push"}`))
		verdict := "no reconnect"
		if now != opened[c] {
			verdict = "RECONNECTED"
		}
		say("  %s: %s (%s)", c, now, verdict)
	}

	fmt.Println("\n==> Summary")
	say("3 local clusters; overlays management and workload applied with kubectl")
	say("2 workload clusters registered with relayctl, bootstrapped with their own single-use tokens, connected over mTLS")
	say("relayctl check: no problems; a certificate for the wrong cluster denied at apply; agent pods injected")
	say("client certificates rotated by the agents while their streams stayed up")
	if keep {
		say("--keep: KUBECONFIG=%s; press Ctrl-C to stop everything", env.Kubeconfig)
		<-ctx.Done()
	}
	return nil
}

func waitFor(ctx context.Context, timeout time.Duration, what string, check func() error) error {
	deadline := time.Now().Add(timeout)
	dots := false
	for {
		err := check()
		if err == nil {
			if dots {
				fmt.Println()
			}
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not after %s: %w", what, timeout, err)
		}
		fmt.Print(".")
		dots = true
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// metricLines returns every sample at url whose name and labels start with
// prefix, one "name{labels} value" line each, in order.
func metricLines(url, prefix string) []string {
	var out []string
	for sample, v := range testenv.ScrapeMetrics(url) {
		if strings.HasPrefix(sample, prefix) {
			out = append(out, fmt.Sprintf("%s %g", sample, v))
		}
	}
	slices.Sort(out)
	return out
}

func firstLine(lines []string) string {
	if len(lines) == 0 {
		return ""
	}
	return lines[0]
}

// injectedAgentPod waits until every agent pod of cluster is injected and
// returns the name of the first.
func injectedAgentPod(ctx context.Context, env *testenv.Env, cluster string) (string, error) {
	var pod string
	err := waitFor(ctx, 90*time.Second, "every agent pod on "+cluster+" injected", func() error {
		var pods corev1.PodList
		if err := env.Cluster(cluster).Client.List(ctx, &pods, client.InNamespace("gloo-mesh"),
			client.MatchingLabels{"app.kubernetes.io/name": "relay-agent"}); err != nil {
			return err
		}
		var live []string
		for _, p := range pods.Items {
			if p.DeletionTimestamp != nil {
				continue
			}
			if p.Annotations[injector.InjectedAnnotation] != "true" {
				return fmt.Errorf("pod %s is not injected yet", p.Name)
			}
			live = append(live, p.Name)
		}
		if len(live) == 0 {
			return errors.New("no agent pod yet")
		}
		slices.Sort(live)
		pod = live[0]
		return nil
	})
	return pod, err
}

func applyWrongSAN(ctx context.Context, mesh *localmesh.Mesh) error {
	manifest, err := mesh.ClientSecretFor(ctx, "mgmt", "cluster-9")
	if err != nil {
		return err
	}
	say("$ kubectl --context cluster-1 apply -f relay-client-tls-secret.yaml   # DNS name cluster-9")
	_, stderr, err := mesh.Env.Kubectl(ctx, manifest, "--context", "cluster-1", "apply", "-f", "-")
	if err == nil {
		return errors.New("the webhook admitted a client certificate for cluster-9 on cluster-1")
	}
	// kubectl prints the patch it tried; the webhook's answer is what matters.
	if i := strings.Index(stderr, "admission webhook"); i >= 0 {
		stderr = stderr[i:]
	}
	fmt.Println(indent(stderr))
	return nil
}

// showInjectedPod shows an agent pod of cluster as relay-webhook injected
// it. The workload overlay was applied in one kubectl apply, before
// relay-webhook ran: pods its Deployment made before the injection was in
// force are evicted by relay-webhook and made again, injected. The demo
// waits for that on every workload cluster, and fails if an agent pod stays
// uninjected.
func showInjectedPod(ctx context.Context, env *testenv.Env, logs, cluster string, workloads []string) error {
	var pod string
	for _, c := range workloads {
		name, err := injectedAgentPod(ctx, env, c)
		if err != nil {
			return err
		}
		if c == cluster {
			pod = name
		}
		// Say what the reinjector did about the pods made in between.
		if data, err := os.ReadFile(filepath.Join(logs, "relay-webhook-"+c+".log")); err == nil {
			if n := strings.Count(string(data), "evicted an agent pod"); n > 0 {
				say("%s: relay-webhook evicted %d agent pod(s) made before the injection was in force; their ReplicaSet made them again, injected", c, n)
			}
		}
	}
	say("pod %s (Deployment relay-agent; Pending, as nothing runs containers here):", pod)
	for _, q := range []struct{ what, path string }{
		{"volumes", `{range .spec.volumes[?(@.secret)]}{.name}{" <- secret "}{.secret.secretName}{"\n"}{end}`},
		{"mounts", `{range .spec.containers[0].volumeMounts[*]}{.mountPath}{"\n"}{end}`},
		{"env", `{range .spec.containers[0].env[*]}{.name}{"="}{.value}{"\n"}{end}`},
	} {
		out, _, err := env.Kubectl(ctx, "", "--context", cluster, "-n", "gloo-mesh", "get", "pod", pod, "-o", "jsonpath="+q.path)
		if err != nil {
			return err
		}
		if strings.TrimSpace(out) == "" {
			return fmt.Errorf("pod %s has no %s: it was not injected", pod, q.what)
		}
		say("%s:", q.what)
		fmt.Println(indent(out))
	}
	return nil
}
