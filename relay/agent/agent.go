package agent

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"sync/atomic"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/meshrelay/meshrelay/internal/everyreplica"
	"github.com/meshrelay/meshrelay/internal/probeserver"
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
	// Clock tells the time certificates are checked at and drives the
	// rotator's and the streams' timers; nil means the wall clock.
	Clock clock.Clock
	// Jitter returns a fraction in [0, 1) that spreads renewals; nil means
	// a random one.
	Jitter func() float64
}

// Agent is a relay agent. It only wires its roles (the watcher and, with a
// trust bundle folder, its poller; the rotator; the streams; the trust
// bundle writer; and, with federated trust, the Istio CA) to one
// controller manager and serves its metrics and probes.
type Agent struct {
	cfg      config.Agent
	replica  string
	mlis     net.Listener
	log      logr.Logger
	mgr      manager.Manager
	provider *Provider
	// roots are the trust anchors every handshake verifies the server with.
	roots   *rootSet
	metrics *agentMetrics
	watcher *watcher
}

// New validates opts and builds an agent and its controller manager,
// without starting anything; Run starts it.
func New(opts Options) (*Agent, error) {
	if err := opts.Config.Validate(); err != nil {
		return nil, fmt.Errorf("invalid relay-agent settings: %w", err)
	}
	if opts.RESTConfig == nil {
		return nil, errors.New("no Kubernetes client configuration")
	}
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	if opts.Jitter == nil {
		opts.Jitter = DefaultJitter
	}
	if opts.Replica == "" {
		opts.Replica, _ = os.Hostname()
	}
	cfg := opts.Config
	a := &Agent{
		cfg:      cfg,
		replica:  opts.Replica,
		mlis:     opts.MetricsListener,
		log:      opts.Log.WithName("relay-agent").WithValues("cluster", cfg.Cluster),
		provider: NewProvider(),
		metrics:  newAgentMetrics(),
	}
	if err := a.wire(opts); err != nil {
		return nil, err
	}
	return a, nil
}

// wire makes the manager and the roles, and adds the roles to the manager.
func (a *Agent) wire(opts Options) error {
	cfg, log, c := &a.cfg, a.log, opts.Clock
	roots := &rootSet{changed: a.metrics.setRoots}
	a.roots = roots
	store := newSecretStore(cfg)
	store.anchors = roots
	var noRoots error
	if cfg.TrustBundleDir != "" {
		store.trust = newTrustDir(cfg.TrustBundleDir, c, log)
		store.trust.load()
		noRoots = noRootsError(cfg)
	}
	w := secretWatch{store: store}
	if cfg.FederatedTrust {
		k := cfg.IstioCASecret.NamespacedName(cfg.Namespace)
		w.istioKey = &k
	}
	mgr, err := newManager(opts.RESTConfig, cfg, log)
	if err != nil {
		return err
	}
	a.mgr = mgr
	if err := w.newCache(mgr); err != nil {
		return err
	}
	store.reader, store.writer = w.cache, mgr.GetClient()

	var leading atomic.Bool
	leading.Store(!cfg.LeaderElection)
	changed, statusDirty := newSignal(), newSignal()
	renewNow := make(chan string, 1)
	renewAt := newRenewAt()
	pushOut := make(chan *relayv1.PushMessage, 4)
	bundles := newTrustBundles(statusDirty.notify)

	a.watcher = newWatcher(watcherOptions{
		Secrets: store, ClientSecret: store.client, Cluster: cfg.Cluster, Insecure: cfg.Insecure,
		Provider: a.provider, Roots: roots, Bundles: bundles, NoRoots: noRoots,
		Cert: a.metrics.cert, GraceRatio: cfg.ClientTLSSecretRotationGracePeriodRatio, Clock: c, Log: log,
	})
	w.watcher, w.changed, w.statusChanged = a.watcher, changed, statusDirty.notify
	st := streamsOptions{
		Config: cfg, Replica: a.replica, Provider: a.provider, Roots: roots, ClientSecret: store.client,
		RenewNow: renewNow, RenewAt: renewAt, Bundles: bundles, Updates: a.metrics.bundleUpdates,
		StatusDirty: statusDirty, PushOut: pushOut, Connected: a.metrics.connected, Reconnects: a.metrics.reconnects, Handovers: a.metrics.handovers,
		Clock: c, Random: rand.Float64, Log: log,
	}
	if w.istioKey != nil {
		w.istio = newIstioCA(istioCAOptions{
			Secret: *w.istioKey, Cache: w.cache, API: mgr.GetAPIReader(), Writer: mgr.GetClient(),
			Leading: leading.Load, Push: pushOut, StatusChanged: statusDirty.notify,
			Expiry: a.metrics.istioExpiry, RootExpiry: a.metrics.istioRootExpiry, Failures: a.metrics.istioFailures, Clock: c, Log: log,
		})
		st.IstioCA = w.istio
	}
	if err := w.setUp(mgr); err != nil {
		return err
	}
	rot := newRotator(rotatorOptions{
		Secrets:    a.watcher,
		Obtainer:   newIssuer(issuerOptions{Config: cfg, Secrets: store, Provider: a.provider, Roots: roots, Clock: c}),
		GraceRatio: cfg.ClientTLSSecretRotationGracePeriodRatio, Leading: &leading, LeaderElection: cfg.LeaderElection,
		Changed: changed, RenewNow: renewNow, RenewAt: renewAt, ClientSecret: store.client,
		Clock: c, Jitter: opts.Jitter, Random: rand.Float64, Rotations: a.metrics.rotations, Log: log,
	})
	writer := newBundleWriter(bundleWriterOptions{
		Bundles: bundles, RootSecret: store.root, Namespace: cfg.Namespace, Client: mgr.GetClient(),
		Clock: c, Random: rand.Float64, Updates: a.metrics.bundleUpdates, Log: log,
	})
	for _, r := range []manager.Runnable{rot, writer, everyreplica.Runnable(w.startStreams(mgr, newStreams(st)))} {
		if err := mgr.Add(r); err != nil {
			return err
		}
	}
	if store.trust != nil {
		return mgr.Add(everyreplica.Runnable(w.watchTrustDir(store.trust)))
	}
	return nil
}

// gatherer is what /metrics serves: relay-agent's metrics beside
// controller-runtime's registry.
func (a *Agent) gatherer() prometheus.Gatherer {
	return prometheus.Gatherers{ctrlmetrics.Registry, a.metrics.registry}
}

// Provider returns the agent's certificate provider.
func (a *Agent) Provider() *Provider { return a.provider }

// Run watches the relay secrets (every replica), rotates the client
// certificate (the leader only, by a Lease), and keeps the streams to the
// server open (every replica) until ctx ends.
func (a *Agent) Run(ctx context.Context) error {
	mlis := a.mlis
	if mlis == nil {
		var err error
		if mlis, err = net.Listen("tcp", a.cfg.MetricsAddress); err != nil {
			return fmt.Errorf("failed to listen on %s: %w", a.cfg.MetricsAddress, err)
		}
	}
	go func() {
		if err := probeserver.Serve(ctx, mlis, probeserver.Handler(a.gatherer(), a.watcher.readiness)); err != nil {
			a.log.Error(err, "metrics server failed")
		}
	}()
	a.log.Info("starting relay-agent", "version", version.String(), "server", a.cfg.ServerAddress, "replica", a.replica)
	return a.mgr.Start(ctx)
}
