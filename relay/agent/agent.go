package agent

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	crconfig "sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/meshrelay/meshrelay/internal/probeserver"
	"github.com/meshrelay/meshrelay/internal/scheme"
	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/pkg/version"
	relayv1 "github.com/meshrelay/meshrelay/relay/api/v1"
)

// Options wire an Agent.
type Options struct {
	Config     config.Agent
	RESTConfig *rest.Config
	Log        logr.Logger
	// MetricsListener, when set, replaces Config.MetricsAddress.
	MetricsListener net.Listener
	// Replica names this agent pod; empty means the host name.
	Replica string
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Jitter returns a fraction in [0, 1) that spreads renewals; nil means
	// a random one.
	Jitter func() float64
}

// Agent is a relay agent.
type Agent struct {
	cfg      *config.Agent
	opts     Options
	log      logr.Logger
	provider *Provider
	secrets  *secrets
	now      func() time.Time
	renewNow chan string
	metrics  *agentMetrics
	ready    atomic.Bool
	roots    atomic.Pointer[[]*x509.Certificate]
	// managed reports whether the client secret is managed elsewhere.
	managed atomic.Bool
	// leading is true while this replica runs the rotator (holds the
	// Lease), or always without leader election.
	leading atomic.Bool
	// istio is federated trust's state; nil when it is off.
	istio *istioCA
	// pushOut queues messages for the push stream besides status, which
	// statusDirty asks for.
	pushOut     chan *relayv1.PushMessage
	statusDirty chan struct{}
}

// New validates opts and builds an agent; Run starts it.
func New(opts Options) (*Agent, error) {
	if err := opts.Config.Validate(); err != nil {
		return nil, fmt.Errorf("invalid relay-agent settings: %w", err)
	}
	if opts.RESTConfig == nil {
		return nil, errors.New("no Kubernetes client configuration")
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Replica == "" {
		opts.Replica, _ = os.Hostname()
	}
	cfg := opts.Config
	ns := cfg.Namespace
	a := &Agent{
		cfg:      &cfg,
		opts:     opts,
		log:      opts.Log.WithName("relay-agent").WithValues("cluster", cfg.Cluster),
		provider: NewProvider(),
		now:      opts.Now,
		renewNow: make(chan string, 1),
		metrics:  newAgentMetrics(),
		secrets: &secrets{
			client: cfg.ClientTLSSecret.NamespacedName(ns),
			root:   cfg.RootTLSSecret.NamespacedName(ns),
			token:  cfg.TokenSecret.NamespacedName(ns),
			tokKey: cfg.TokenSecret.Key,
		},
		pushOut:     make(chan *relayv1.PushMessage, 4),
		statusDirty: make(chan struct{}, 1),
	}
	if cfg.FederatedTrust {
		a.istio = &istioCA{agent: a, key: cfg.IstioCASecret.NamespacedName(ns), pending: map[string]crypto.Signer{}}
	}
	a.leading.Store(!cfg.LeaderElection)
	return a, nil
}

// statusChanged asks the push stream to send a fresh status.
func (a *Agent) statusChanged() {
	select {
	case a.statusDirty <- struct{}{}:
	default:
	}
}

// Provider returns the agent's certificate provider.
func (a *Agent) Provider() *Provider { return a.provider }

// Run watches the relay secrets (every replica), rotates the client
// certificate (the leader only, by a Lease), and keeps the push and pull
// streams open (every replica) until ctx ends.
func (a *Agent) Run(ctx context.Context) error {
	scheme, err := scheme.Scheme()
	if err != nil {
		return err
	}
	keys := []types.NamespacedName{a.secrets.client, a.secrets.root, a.secrets.token}
	namespaces := map[string]cache.Config{}
	for _, k := range keys {
		namespaces[k.Namespace] = cache.Config{}
	}
	if a.istio != nil {
		// Only the Istio CA secret is read in its namespace (unless the
		// agent's own secrets live there too).
		keys = append(keys, a.istio.key)
		if _, ok := namespaces[a.istio.key.Namespace]; !ok {
			namespaces[a.istio.key.Namespace] = cache.Config{FieldSelector: fields.OneTermEqualSelector("metadata.name", a.istio.key.Name)}
		}
	}
	mgr, err := ctrl.NewManager(a.opts.RESTConfig, ctrl.Options{
		Scheme:                        scheme,
		Logger:                        a.log,
		Cache:                         cache.Options{DefaultNamespaces: namespaces},
		Metrics:                       metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress:        "0",
		LeaderElection:                a.cfg.LeaderElection,
		LeaderElectionID:              "relay-agent-" + a.cfg.Cluster,
		LeaderElectionNamespace:       a.cfg.Namespace,
		LeaderElectionReleaseOnCancel: true,
		Controller:                    crconfig.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		return fmt.Errorf("failed to create manager: %w", err)
	}
	a.secrets.reader = mgr.GetClient()
	a.secrets.writer = mgr.GetClient()
	if a.istio != nil {
		a.istio.reader, a.istio.writer, a.istio.api = mgr.GetClient(), mgr.GetClient(), mgr.GetAPIReader()
	}

	relaySecret := predicate.NewPredicateFuncs(func(o client.Object) bool {
		return slices.Contains(keys, types.NamespacedName{Namespace: o.GetNamespace(), Name: o.GetName()})
	})
	changed := make(chan struct{}, 1)
	err = ctrl.NewControllerManagedBy(mgr).Named("relay-agent-watcher").
		WithOptions(controllerOptions()).
		For(&corev1.Secret{}, builder.WithPredicates(relaySecret)).
		Complete(reconcile.Func(func(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
			if a.istio != nil && req.NamespacedName == a.istio.key {
				if a.istio.refresh(ctx) {
					a.statusChanged()
				}
				return reconcile.Result{}, nil
			}
			_, _ = a.watch(ctx)
			select {
			case changed <- struct{}{}:
			default:
			}
			return reconcile.Result{}, nil
		}))
	if err != nil {
		return fmt.Errorf("failed to set up the secret watcher: %w", err)
	}
	if err := mgr.Add(&rotator{agent: a, changed: changed, jitter: a.opts.Jitter}); err != nil {
		return err
	}
	if err := mgr.Add(nonLeader(func(ctx context.Context) error {
		if !mgr.GetCache().WaitForCacheSync(ctx) {
			return nil
		}
		_, _ = a.watch(ctx)
		if a.istio != nil {
			a.istio.refresh(ctx)
		}
		a.ready.Store(true)
		return a.stream(ctx)
	})); err != nil {
		return err
	}
	mlis := a.opts.MetricsListener
	if mlis == nil {
		if mlis, err = net.Listen("tcp", a.cfg.MetricsAddress); err != nil {
			return fmt.Errorf("failed to listen on %s: %w", a.cfg.MetricsAddress, err)
		}
	}
	go func() {
		if err := probeserver.Serve(ctx, mlis, probeserver.Handler(a.metrics.registry, a.readiness)); err != nil {
			a.log.Error(err, "metrics server failed")
		}
	}()
	a.log.Info("starting relay-agent", "version", version.String(), "server", a.cfg.ServerAddress, "replica", a.opts.Replica)
	return mgr.Start(ctx)
}

// watch reads the relay secrets and loads the client certificate into the
// provider when it is usable: every replica's new handshakes then use it.
// It returns what it read, for the rotator.
func (a *Agent) watch(ctx context.Context) (*trust, error) {
	t, err := a.secrets.read(ctx, a.cfg.Cluster, a.now())
	if err != nil {
		a.log.Info("failed to read relay secrets", "error", err.Error())
		return nil, err
	}
	a.managed.Store(t.managed)
	if len(t.roots) > 0 {
		a.setRoots(t.roots)
	}
	if t.client == nil || t.clientOK != nil {
		return t, nil
	}
	if cur := a.provider.Current(); cur != nil && cur.Leaf.Equal(t.client.Leaf) {
		return t, nil
	}
	a.provider.Set(t.client)
	a.metrics.expiry.Set(float64(t.client.Leaf.NotAfter.Unix()))
	a.log.Info("loaded client certificate", "serial", t.client.Leaf.SerialNumber.Text(16), "notAfter", t.client.Leaf.NotAfter, "managedElsewhere", t.managed)
	return t, nil
}

func (a *Agent) setRoots(roots []*x509.Certificate) { a.roots.Store(&roots) }

func (a *Agent) currentRoots() []*x509.Certificate {
	if r := a.roots.Load(); r != nil {
		return *r
	}
	return nil
}

func (a *Agent) readiness() error {
	cert := a.provider.Current()
	switch {
	case !a.ready.Load():
		return errors.New("caches are syncing")
	case cert == nil && !a.cfg.Insecure:
		return fmt.Errorf("no valid client certificate in secret %s yet", a.secrets.client)
	}
	return nil
}
