package webhook_test

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/meshrelay/meshrelay/internal/localmesh"
	"github.com/meshrelay/meshrelay/internal/testenv"
	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/webhook"
)

// webhookEnv is a local cluster with relay-webhook running in-process and
// the manifests' webhook configurations pointing at it.
type webhookEnv struct {
	*testenv.Env
	cluster *testenv.Cluster
	metrics string
	// addr is the webhook's own address (host:port).
	addr string
	ctx  context.Context
}

// startWebhook starts a local cluster (with kube-controller-manager when
// pods are needed), relay-webhook for workload cluster "cluster-1", and
// applies the webhook configurations of manifests/webhook with their
// clientConfig pointed at it. It returns once the webhook answers through
// the API server.
func startWebhook(t testing.TB, withPods bool) *webhookEnv {
	t.Helper()
	return startWebhookFor(t, withPods, cluster)
}

// startWebhookFor is startWebhook for the workload cluster named name, or
// for the management cluster when name is empty.
func startWebhookFor(t testing.TB, withPods bool, name string) *webhookEnv {
	t.Helper()
	clusterName := "workload"
	if name == "" {
		clusterName = "management"
	}
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	env := testenv.Start(t, testenv.Options{
		Names:             []string{clusterName},
		ControllerManager: withPods,
		CRDDirs:           []string{filepath.Join(root, "manifests", "crds"), filepath.Join(root, "hack", "crds", "cert-manager")},
	})
	c := env.Clusters[0]
	ctx, cancel := context.WithCancel(t.Context())
	for _, ns := range []string{config.DefaultNamespace, config.DefaultIstioNamespace, config.DefaultWebhookNamespace} {
		if err := c.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
	port := freePort(t)
	mlis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.DefaultWebhook()
	if name != "" {
		cfg.Cluster = name
		cfg.ServerAddress = "gloo-mesh-mgmt-server.gloo-mesh:9900"
	}
	cfg.ListenAddress = fmt.Sprintf("127.0.0.1:%d", port)
	srv, err := webhook.New(webhook.Options{
		Config: cfg, RESTConfig: c.Config, Log: logr.Discard(),
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
	e := &webhookEnv{Env: env, cluster: c, metrics: mlis.Addr().String(), addr: cfg.ListenAddress, ctx: ctx}
	e.installConfigurations(t, root, port)
	testenv.Eventually(t, "the API server calls the webhook", time.Minute, func() error {
		select {
		case err := <-done:
			return fmt.Errorf("relay-webhook stopped: %v", err)
		default:
		}
		_, stderr, _ := e.apply(toYAML(t, tokenSecret("")), "--dry-run=server")
		if !strings.Contains(stderr, "missing or empty") {
			return fmt.Errorf("an empty token is not denied yet: %q", stderr)
		}
		return nil
	})
	return e
}

// installConfigurations applies manifests/webhook/configurations through
// kubectl kustomize, with each webhook's clientConfig turned from the
// in-cluster Service into the URL of the in-process webhook.
func (e *webhookEnv) installConfigurations(t testing.TB, root string, port int) {
	t.Helper()
	out, _, err := e.Kubectl(e.ctx, "", "kustomize", filepath.Join(root, "manifests", "webhook", "configurations"))
	if err != nil {
		t.Fatal(err)
	}
	docs, err := localmesh.PointWebhooksAt(out, fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.Kubectl(e.ctx, docs, "apply", "-f", "-"); err != nil {
		t.Fatal(err)
	}
}

// apply runs kubectl apply -f - with extra args.
func (e *webhookEnv) apply(manifest string, args ...string) (stdout, stderr string, err error) {
	return e.Kubectl(e.ctx, manifest, append([]string{"apply", "-f", "-"}, args...)...)
}

// mustApply applies manifest and fails unless it is admitted; it returns
// kubectl's stderr, where admission warnings are printed.
func (e *webhookEnv) mustApply(t *testing.T, manifest string) string {
	t.Helper()
	_, stderr, err := e.apply(manifest)
	if err != nil {
		t.Fatalf("apply was refused: %v", err)
	}
	return stderr
}

// wantDenied applies manifest (with args) and fails unless kubectl reports
// the webhook's denial containing each of want.
func (e *webhookEnv) wantDenied(t *testing.T, manifest string, args []string, want ...string) {
	t.Helper()
	_, stderr, err := e.apply(manifest, args...)
	if err == nil {
		t.Fatalf("apply was admitted; want a denial containing %q", want)
	}
	if !strings.Contains(stderr, "denied the request") {
		t.Fatalf("kubectl failed without a webhook denial: %s", stderr)
	}
	for _, w := range want {
		if !strings.Contains(stderr, w) {
			t.Errorf("denial %q\ndoes not contain %q", strings.TrimSpace(stderr), w)
		}
	}
}

func (e *webhookEnv) secretExists(t *testing.T, ns, name string) bool {
	t.Helper()
	err := e.cluster.Client.Get(e.ctx, types.NamespacedName{Namespace: ns, Name: name}, &corev1.Secret{})
	if err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
	return err == nil
}

func TestMain(m *testing.M) {
	ctrllog.SetLogger(logr.Discard())
	os.Exit(m.Run())
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// mustApplyTB applies manifest and fails unless it is admitted.
func (e *webhookEnv) mustApplyTB(t testing.TB, manifest string) {
	t.Helper()
	if _, _, err := e.apply(manifest); err != nil {
		t.Fatalf("apply was refused: %v", err)
	}
}

func errNotFound(key client.ObjectKey) error {
	return apierrors.NewNotFound(corev1.Resource("secrets"), key.Name)
}

func mustPool(t testing.TB, pemCerts []byte) *x509.CertPool {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemCerts) {
		t.Fatal("no certificates in the PEM")
	}
	return pool
}
