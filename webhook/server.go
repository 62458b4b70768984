package webhook

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	crconfig "sigs.k8s.io/controller-runtime/pkg/config"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	crwebhook "sigs.k8s.io/controller-runtime/pkg/webhook"

	"github.com/meshrelay/meshrelay/internal/namedsecrets"
	"github.com/meshrelay/meshrelay/internal/probeserver"
	"github.com/meshrelay/meshrelay/internal/scheme"
	meshv1alpha1 "github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/pkg/relaysecret"
	"github.com/meshrelay/meshrelay/pkg/version"
	"github.com/meshrelay/meshrelay/webhook/selfcert"
)

// Options wire a Server.
type Options struct {
	Config     config.Webhook
	RESTConfig *rest.Config
	Log        logr.Logger
	// Now is the clock of the validity checks; time.Now when nil.
	Now func() time.Time
	// MetricsListener, when set, is used instead of Config.MetricsAddress.
	MetricsListener net.Listener
	// ExtraServingNames and ServingIPs are added to a self-managed serving
	// certificate: tests reach the webhook at 127.0.0.1.
	ExtraServingNames []string
	ServingIPs        []net.IP
}

// Server is relay-webhook: the admission handlers on a controller-runtime
// webhook server, its serving certificate, and its probes.
type Server struct {
	opts  Options
	cfg   *config.Webhook
	log   logr.Logger
	ready atomic.Bool
}

// New validates opts and builds a server; Run starts it.
func New(opts Options) (*Server, error) {
	if err := opts.Config.Validate(); err != nil {
		return nil, fmt.Errorf("invalid relay-webhook settings: %w", err)
	}
	if opts.RESTConfig == nil {
		return nil, errors.New("no Kubernetes client configuration")
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	// Uncompressed responses: the API server gzips the watch events of the
	// secret caches for a client that accepts them, and both sides then
	// spend CPU on a few kilobytes that stay inside the cluster, beside
	// the reviews.
	opts.RESTConfig = rest.CopyConfig(opts.RESTConfig)
	opts.RESTConfig.DisableCompression = true
	cfg := opts.Config
	return &Server{opts: opts, cfg: &cfg, log: opts.Log.WithName("relay-webhook")}, nil
}

// Run serves the admission webhooks and the probes until ctx ends.
func (s *Server) Run(ctx context.Context) error {
	scheme, err := scheme.Scheme()
	if err != nil {
		return err
	}
	host, port, err := hostPort(s.cfg.ListenAddress)
	if err != nil {
		return err
	}
	mlis, err := listen(s.opts.MetricsListener, s.cfg.MetricsAddress)
	if err != nil {
		return err
	}

	tlsOpts, certReady, certs, err := s.servingCertificate(ctx, scheme)
	if err != nil {
		mlis.Close()
		return err
	}
	// The validators read only the relay secrets a check needs (the root a
	// chain must verify to, and the certificates a CA update must not
	// orphan), each watched by name: relay-webhook's Role names them, and
	// no other secret of the namespace is read.
	named, err := namedsecrets.New(s.opts.RESTConfig, namedsecrets.Options{Scheme: scheme, Secrets: readSecrets(s.cfg)})
	if err != nil {
		mlis.Close()
		return err
	}
	mgr, err := ctrl.NewManager(s.opts.RESTConfig, ctrl.Options{
		Scheme: scheme,
		Logger: s.log,
		// Its client reads Secrets from the named caches, and refuses
		// other Secrets rather than list the namespace's.
		NewClient: func(rc *rest.Config, o client.Options) (client.Client, error) {
			o.Cache.Reader = named.Over(o.Cache.Reader)
			return client.New(rc, o)
		},
		// Pods are read only by the reinjector: the agent pods of the
		// relay namespace, which relay-webhook's Role there lets it watch.
		// KubernetesClusters only by the root guard of the management
		// cluster, those of the relay namespace, on the first root removal.
		Cache: cache.Options{ByObject: map[client.Object]cache.ByObject{
			&corev1.Pod{}: {
				Namespaces: map[string]cache.Config{s.cfg.Namespace: {}},
				Label:      labels.SelectorFromSet(labels.Set{meshv1alpha1.InjectLabel: meshv1alpha1.InjectLabelValue}),
			},
			&meshv1alpha1.KubernetesCluster{}: {Namespaces: map[string]cache.Config{s.cfg.Namespace: {}}},
		}},
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Controller:             crconfig.Controller{SkipNameValidation: ptr.To(true)},
		WebhookServer: crwebhook.NewServer(crwebhook.Options{
			Host:    host,
			Port:    port,
			CertDir: s.cfg.CertDir,
			TLSOpts: tlsOpts,
		}),
	})
	if err != nil {
		mlis.Close()
		return fmt.Errorf("failed to create manager: %w", err)
	}
	ctbs, err := s.trustBundleAPI(mgr)
	if err != nil {
		mlis.Close()
		return err
	}
	if err := setupWithManager(mgr, s.cfg, s.opts.Now, ctbs.Served); err != nil {
		mlis.Close()
		return err
	}
	ready := func() error {
		if !s.ready.Load() {
			return errors.New("caches are syncing")
		}
		return certReady()
	}
	// On a workload cluster, agent pods created before the injection was in
	// force are evicted once it is, and whether agent pods may mount a
	// ClusterTrustBundle is checked again and again; the management
	// cluster, which has no agent settings, injects nothing.
	if pods := newPodInjector(s.cfg, ctbs.Served); pods.problem == nil {
		if err := setupReinjector(mgr, s.cfg.Namespace, pods.settings, ready, s.opts.Now, s.log.WithName("reinjector")); err != nil {
			mlis.Close()
			return err
		}
		if err := mgr.Add(ctbs); err != nil {
			mlis.Close()
			return err
		}
	}
	if err := mgr.Add(named); err != nil {
		mlis.Close()
		return err
	}
	if certs != nil {
		if err := mgr.Add(certs); err != nil {
			mlis.Close()
			return err
		}
	}

	servingCerts := filesCertificates(s.cfg.CertDir)
	if certs != nil {
		servingCerts = certs.Certificates
	}
	probes := probeserver.Handler(gatherer(newCertificateExpiry(servingCerts)), ready)
	if s.cfg.EnableProfiling {
		probes = probeserver.WithProfiling(probes)
	}
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return mgr.Start(ctx) })
	g.Go(func() error { return probeserver.Serve(ctx, mlis, probes) })
	g.Go(func() error {
		if !mgr.GetCache().WaitForCacheSync(ctx) || !named.WaitForCacheSync(ctx) {
			return nil
		}
		s.ready.Store(true)
		s.log.Info("serving admission webhooks", "address", s.cfg.ListenAddress, "metrics", mlis.Addr().String(),
			"namespace", s.cfg.Namespace, "cluster", s.cfg.Cluster)
		return nil
	})
	return g.Wait()
}

// gatherer is what /metrics serves: controller-runtime's registry (Go,
// process, client, workqueue and admission metrics), relay-webhook's
// build info and own collectors, in a registry per Run (tests run several
// in one process).
func gatherer(own ...prometheus.Collector) prometheus.Gatherer {
	reg := prometheus.NewRegistry()
	reg.MustRegister(version.NewBuildInfo("relay_webhook"))
	reg.MustRegister(own...)
	return prometheus.Gatherers{ctrlmetrics.Registry, reg}
}

// trustBundleAPI returns the check of whether the cluster serves
// ClusterTrustBundles, made once now: agent pods admitted from the first
// one get the ClusterTrustBundle where it is served. A failed first check
// leaves it unknown (not served) and is retried soon; it is not a reason
// not to serve.
func (s *Server) trustBundleAPI(mgr ctrl.Manager) (*trustBundleAPI, error) {
	disc, err := discovery.NewDiscoveryClientForConfigAndClient(mgr.GetConfig(), mgr.GetHTTPClient())
	if err != nil {
		return nil, fmt.Errorf("failed to build the discovery client: %w", err)
	}
	a := newTrustBundleAPI(disc, s.log.WithName("trust-bundle-api"))
	if newPodInjector(s.cfg, a.Served).problem != nil {
		return a, nil
	}
	if err := a.check(); err != nil {
		a.log.Error(err, "failed to find out whether the cluster serves ClusterTrustBundles; agent pods get the trust bundle from the root secret alone until a check succeeds")
	}
	return a, nil
}

// servingCertificate returns the TLS options of the webhook server: the
// self-managed certificate's GetCertificate and its manager, or nothing
// (controller-runtime then reads and watches tls.crt and tls.key in
// CertDir).
func (s *Server) servingCertificate(ctx context.Context, scheme *runtime.Scheme) ([]func(*tls.Config), func() error, *selfcert.Manager, error) {
	minTLS := func(c *tls.Config) { c.MinVersion = tls.VersionTLS12 }
	if s.cfg.Certificates == config.CertificatesFiles {
		return []func(*tls.Config){minTLS, http1Only}, func() error { return nil }, nil, nil
	}
	direct, err := client.New(s.opts.RESTConfig, client.Options{Scheme: scheme})
	if err != nil {
		return nil, nil, nil, fmt.Errorf("failed to build Kubernetes client: %w", err)
	}
	m, err := selfcert.New(selfcert.Options{
		Client:                  direct,
		Namespace:               s.cfg.WebhookNamespace,
		SecretName:              s.cfg.CertificateSecret,
		ServiceName:             s.cfg.ServiceName,
		ValidatingConfiguration: s.cfg.ValidatingConfiguration,
		MutatingConfiguration:   s.cfg.MutatingConfiguration,
		ExtraDNSNames:           s.opts.ExtraServingNames,
		IPAddresses:             s.opts.ServingIPs,
		Now:                     s.opts.Now,
		Log:                     s.log.WithName("serving-certificate"),
	})
	if err != nil {
		return nil, nil, nil, err
	}
	if err := m.Ensure(ctx); err != nil {
		return nil, nil, nil, fmt.Errorf("failed to set up the serving certificate: %w", err)
	}
	return []func(*tls.Config){minTLS, http1Only, func(c *tls.Config) { c.GetCertificate = m.GetCertificate }}, m.Ready, m, nil
}

// http1Only offers HTTP/1.1 alone, in place of controller-runtime's h2.
// The API server calls a webhook behind a Service (and at any URL but a
// localhost one) over HTTP/1.1 whatever the webhook offers, keeping idle
// connections for the next reviews. Offering only that puts a webhook
// called at 127.0.0.1 (tests, make demo, hack/admissionbench) on the path
// a cluster takes, where HTTP/2 added 0.1–0.3 ms to each review (its frame
// reader, handler and writer hand each request between goroutines), and
// leaves HTTP/2's stream handling, and its rapid-reset exposure, out of a
// server that every pod network can reach.
func http1Only(c *tls.Config) { c.NextProtos = []string{"http/1.1"} }

// readSecrets are the relay secrets relay-webhook reads to judge a write,
// all in cfg.Namespace: the root (a chain must also verify to it), and the
// signing, server and client secrets (an update of the root or the signing
// CA must not leave their certificates without a chain). The manifests'
// Role names these, and only these, with their default names.
func readSecrets(cfg *config.Webhook) []types.NamespacedName {
	names := relaysecret.WebhookNames(cfg)
	return []types.NamespacedName{names.Root, names.Signing, names.Server, names.Client}
}

func listen(given net.Listener, address string) (net.Listener, error) {
	if given != nil {
		return given, nil
	}
	lis, err := net.Listen("tcp", address)
	if err != nil {
		return nil, fmt.Errorf("failed to listen on %s: %w", address, err)
	}
	return lis, nil
}

func hostPort(address string) (string, int, error) {
	host, p, err := net.SplitHostPort(address)
	if err != nil {
		return "", 0, fmt.Errorf("listen address %q: %w", address, err)
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		return "", 0, fmt.Errorf("listen address %q: port %q is not a number", address, p)
	}
	return host, port, nil
}
