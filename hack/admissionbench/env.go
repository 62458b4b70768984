package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/meshrelay/meshrelay/internal/localmesh"
	"github.com/meshrelay/meshrelay/internal/procstat"
	"github.com/meshrelay/meshrelay/internal/testenv"
	"github.com/meshrelay/meshrelay/pkg/config"
)

// clusterName is the local cluster's name and the workload cluster name
// the overlay's settings.env gives relay-webhook.
const clusterName = "cluster-1"

// environment is a local cluster with the workload overlay applied and
// relay-webhook running as its Deployment says.
type environment struct {
	dir      string
	env      *testenv.Env
	mesh     *localmesh.Mesh
	webhook  *testenv.Process
	binary   string
	pid      int
	clients  *kubernetes.Clientset
	fixtures *fixtures
	// webhookAddr and metricsAddr are relay-webhook's listen and metrics
	// addresses (host:port).
	webhookAddr, metricsAddr string
	// floor is the least webhook (floor.go), at floorAddr.
	floor     *testenv.Process
	floorAddr string
	floorPid  int
}

func startEnvironment(ctx context.Context, o options) (*environment, error) {
	bins, err := filepath.Abs(o.bins)
	if err != nil {
		return nil, err
	}
	binary := filepath.Join(bins, "relay-webhook")
	if _, err := os.Stat(binary); err != nil {
		return nil, fmt.Errorf("relay-webhook binary %s: %w (run make build)", binary, err)
	}
	root, err := testenv.RepoRoot()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "admissionbench-")
	if err != nil {
		return nil, err
	}
	e := &environment{dir: dir, binary: binary}
	e.env, err = testenv.StartIn(filepath.Join(dir, "clusters"), testenv.Options{Names: []string{clusterName}})
	if err != nil {
		e.stop()
		return nil, fmt.Errorf("failed to start the local cluster: %w", err)
	}
	c := e.env.Clusters[0]
	// An unthrottled client: client-go's default rate limit would be
	// measured instead of the API server.
	rc := rest.CopyConfig(c.Config)
	rc.QPS, rc.Burst = -1, 0
	if e.clients, err = kubernetes.NewForConfig(rc); err != nil {
		e.stop()
		return nil, err
	}
	if e.webhookAddr, err = testenv.FreeAddr(); err == nil {
		e.metricsAddr, err = testenv.FreeAddr()
	}
	if err != nil {
		e.stop()
		return nil, err
	}
	e.mesh = localmesh.New(e.env, root, bins, dir)
	if err := e.mesh.Install(ctx, clusterName, "workload", nil, e.webhookAddr); err != nil {
		e.stop()
		return nil, err
	}
	if e.fixtures, err = newFixtures(); err != nil {
		e.stop()
		return nil, err
	}
	if err := e.startWebhook(ctx, o.cpuProfile > 0); err != nil {
		e.stop()
		return nil, err
	}
	// The root secret every relay secret here chains to, as relayctl
	// register copies it (relay-webhook admits it).
	if _, err := e.secrets().Create(ctx, e.fixtures.root, metav1.CreateOptions{}); err != nil {
		e.stop()
		return nil, fmt.Errorf("failed to create the root secret: %w", err)
	}
	if err := e.startFloor(ctx); err != nil {
		e.stop()
		return nil, err
	}
	return e, nil
}

// startWebhook runs relay-webhook as the overlay's Deployment runs it,
// with local listen and metrics addresses and a serving certificate that
// covers 127.0.0.1, and waits until the API server calls it.
func (e *environment) startWebhook(ctx context.Context, profiling bool) error {
	objs := e.mesh.Rendered(clusterName)
	dep, err := localmesh.DeploymentOf(objs, "relay-webhook")
	if err != nil {
		return err
	}
	local := localmesh.Local{
		Pod:     dep + "-local-0",
		LogName: "relay-webhook",
		Flags:   []string{"--listen-address", e.webhookAddr, "--metrics-address", e.metricsAddr, "--serving-ip", "127.0.0.1"},
	}
	if profiling {
		local.Extra = []string{"--enable-profiling"}
	}
	if e.webhook, _, err = e.mesh.StartDeployment(ctx, clusterName, dep, local); err != nil {
		return err
	}
	if err := testenv.WaitReady(ctx, e.webhook, "http://"+e.metricsAddr+"/readyz", 2*time.Minute); err != nil {
		return err
	}
	if e.pid, err = procstat.PidOf("relay-webhook", e.webhookAddr); err != nil {
		return err
	}
	// Ready once an invalid relay secret is denied through the API server.
	deadline := time.Now().Add(time.Minute)
	for {
		err := e.denied(ctx)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the API server does not call relay-webhook: %w\n%s", err, e.webhook.Tail(20))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// denied reports nil when a relay client secret for another cluster is
// denied by relay-webhook.
func (e *environment) denied(ctx context.Context) error {
	bad := e.fixtures.foreign.DeepCopy()
	_, err := e.clients.CoreV1().Secrets(config.DefaultNamespace).Create(ctx, bad, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	if err == nil {
		return errors.New("a client secret of another cluster was admitted")
	}
	if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "denied the request") {
		return err
	}
	return nil
}

// cpuProfile fetches relay-webhook's CPU profile over the next d into
// dir/name, for go tool pprof; the returned channel gets its error when
// it ends.
func (e *environment) cpuProfile(ctx context.Context, dir, name string, d time.Duration) <-chan error {
	done := make(chan error, 1)
	go func() {
		done <- func() error {
			url := fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", e.metricsAddr, int(d.Seconds()))
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			if err != nil {
				return err
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("relay-webhook's CPU profile: %s", resp.Status)
			}
			b, err := io.ReadAll(resp.Body)
			if err != nil {
				return err
			}
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return err
			}
			path := filepath.Join(dir, name)
			if err := os.WriteFile(path, b, 0o644); err != nil {
				return err
			}
			fmt.Printf("  relay-webhook CPU profile: %s\n", path)
			return nil
		}()
	}()
	return done
}

func (e *environment) stop() {
	if e.floor != nil {
		// The floor serves until it is killed.
		_ = e.floor.Kill()
	}
	if e.mesh != nil {
		if err := e.mesh.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
	}
	if e.env != nil {
		if err := e.env.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
	}
	_ = os.RemoveAll(e.dir)
}

// secrets is the client of the relay namespace's secrets.
func (e *environment) secrets() secretsClient {
	return e.clients.CoreV1().Secrets(config.DefaultNamespace)
}

type secretsClient interface {
	Create(context.Context, *corev1.Secret, metav1.CreateOptions) (*corev1.Secret, error)
	Delete(context.Context, string, metav1.DeleteOptions) error
}
