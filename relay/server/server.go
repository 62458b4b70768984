package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	grpccreds "google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	crconfig "sigs.k8s.io/controller-runtime/pkg/config"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/meshrelay/meshrelay/internal/everyreplica"
	"github.com/meshrelay/meshrelay/internal/namedsecrets"
	"github.com/meshrelay/meshrelay/internal/probeserver"
	"github.com/meshrelay/meshrelay/internal/scheme"
	meshv1alpha1 "github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
	"github.com/meshrelay/meshrelay/pkg/config"
	relayv1 "github.com/meshrelay/meshrelay/relay/api/v1"
)

// Options wire a Server.
type Options struct {
	Config     config.Server
	RESTConfig *rest.Config
	Log        logr.Logger
	// Listener and MetricsListener, when set, replace Config.ListenAddress
	// and Config.MetricsAddress (tests listen on 127.0.0.1:0).
	Listener, MetricsListener net.Listener
	// Clock tells the time and ticks; nil means the real clock.
	Clock clock.WithTicker
}

// Server is a relay server.
type Server struct {
	opts     Options
	cfg      *config.Server
	log      logr.Logger
	registry *prometheus.Registry
	metrics  *metrics
	keys     *keyring
	// secrets reads and watches the relay secrets the keyring loads.
	secrets *namedsecrets.Cache
	svc     *service
	ready   atomic.Bool
	// replica is this replica's name (config.Server.Replica).
	replica string
	// registered collects relay_cluster_registered from the cache.
	registered *registeredCollector
	// direct reads and writes past any cache: the CA bootstrap, and the
	// ClusterTrustBundle (cluster-scoped, never cached here).
	direct client.Client
	// noBundleAPI is set once the cluster was found not to serve
	// ClusterTrustBundles (the leader's rotation only).
	noBundleAPI bool
}

// New validates opts and builds a server; Run starts it.
func New(opts Options) (*Server, error) {
	if err := opts.Config.Validate(); err != nil {
		return nil, fmt.Errorf("invalid relay-server settings: %w", err)
	}
	if opts.RESTConfig == nil {
		return nil, errors.New("no Kubernetes client configuration")
	}
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	cfg := opts.Config
	// relay-server's own metrics have a registry per Server (tests run
	// several in one process); /metrics serves it together with
	// controller-runtime's, which holds the Go and process collectors and
	// the client, workqueue and leader-election metrics (gatherer).
	reg := prometheus.NewRegistry()
	m := newMetrics(reg)
	conns := newConnections()
	reg.MustRegister(conns)
	s := &Server{opts: opts, cfg: &cfg, log: opts.Log.WithName("relay-server"), registry: reg, metrics: m, keys: newKeyring(&cfg, m),
		replica: cfg.Replica(os.Getenv, os.Hostname)}
	s.keys.log = s.log.WithName("client-issuers")
	s.keys.refusals = newLimitedLog(refusalLogEvery, refusalLogBurst, opts.Clock.Now)
	s.svc = &service{
		cfg:     s.cfg,
		keys:    s.keys,
		limiter: newSigningLimiter(cfg.MaxConcurrentSigning, cfg.PeerSigningRate, cfg.PeerSigningBurst, opts.Clock.Now).perCluster(cfg.ClusterRenewRate, cfg.ClusterRenewBurst),
		conns:   conns,
		bounds:  newAgentBounds(reg, &cfg, opts.Clock.Now, s.log.WithName("bounds")),
		trust: newTrust(trustOptions{
			State: newTrustState(), Results: newPendingResults(), Queue: newPolicyQueue(cfg.Namespace),
			Conns: conns, Metrics: m, Clock: opts.Clock, Log: s.log.WithName("trust"),
		}),
		metrics: m,
		clock:   opts.Clock,
		log:     s.log.WithName("relay"),
	}
	s.svc.calls = newCallLimits(cfg.MaxStreamsPerCluster, s.svc.bounds)
	reg.MustRegister(s.svc.limiter.collectors()...)
	s.svc.clientRefused = newClientRefused(reg)
	s.svc.status = newStatusWriter(s.replica, cfg.Namespace, conns, opts.Clock.Now, s.log.WithName("status"))
	conns.now, conns.onChange = opts.Clock.Now, s.svc.status.changed
	s.registered = &registeredCollector{ns: cfg.Namespace}
	reg.MustRegister(s.registered)
	s.keys.admitHandshake = s.svc.admitHandshake
	// A changed trust bundle (a root rotation's Prepare and Retire) goes
	// to every connected agent at once, not only at its next pull stream.
	s.keys.onBundle = func(bundle []byte) {
		conns.sendAll(&relayv1.Instruction{Instruction: &relayv1.Instruction_TrustBundle{TrustBundle: &relayv1.TrustBundle{CaCertificates: bundle}}})
	}
	return s, nil
}

// RenewNow asks the connected agents of cluster to renew at once.
func (s *Server) RenewNow(cluster, reason string) int { return s.svc.RenewNow(cluster, reason) }

// Run bootstraps the CA (unless disabled), starts watching the relay
// secrets and KubernetesClusters, and serves gRPC and metrics until ctx ends.
func (s *Server) Run(ctx context.Context) error {
	scheme, err := scheme.Scheme()
	if err != nil {
		return err
	}
	if s.cfg.Insecure {
		s.log.Info("WARNING: insecure mode: relay gRPC is plaintext with no certificates and no authentication; use it only for tests")
		if err := s.useInsecureCA(); err != nil {
			return err
		}
	} else {
		direct, err := client.New(s.opts.RESTConfig, client.Options{Scheme: scheme})
		if err != nil {
			return fmt.Errorf("failed to build Kubernetes client: %w", err)
		}
		s.direct = direct
		if err := EnsureCA(ctx, direct, s.cfg, s.log.WithName("ca")); err != nil {
			return fmt.Errorf("failed to bootstrap the CA: %w", err)
		}
	}

	mgr, err := ctrl.NewManager(managerConfig(s.opts.RESTConfig), ctrl.Options{
		Scheme: scheme,
		Logger: s.log,
		// KubernetesClusters and RootTrustPolicies are cached; Secrets
		// never are by the manager: the relay secrets have their own
		// caches by name (watchSecrets), and others are read by name.
		// Nothing relay-server does reads managedFields, and a cluster's
		// status, written by every replica and the leader, makes them a
		// large part of each cached KubernetesCluster and of every copy
		// of one. An update of a cached object keeps them at the API
		// server, which leaves managedFields alone when a request omits
		// them.
		Cache: cache.Options{
			DefaultNamespaces: map[string]cache.Config{s.cfg.Namespace: {}},
			DefaultTransform:  cache.TransformStripManagedFields(),
		},
		Client:                 client.Options{Cache: &client.CacheOptions{DisableFor: []client.Object{&corev1.Secret{}}}},
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Controller:             crconfig.Controller{SkipNameValidation: ptr.To(true)},
		// The leader derives KubernetesCluster conditions and cleans up
		// after replicas that are gone (status.go); everything else runs on
		// every replica.
		LeaderElection:                s.cfg.LeaderElection,
		LeaderElectionID:              leaderLease,
		LeaderElectionNamespace:       s.cfg.Namespace,
		LeaderElectionReleaseOnCancel: true,
	})
	if err != nil {
		return fmt.Errorf("failed to create manager: %w", err)
	}
	s.svc.reader = mgr.GetClient()
	s.svc.api = mgr.GetAPIReader()
	if s.svc.clusters, err = newRawClusters(mgr.GetConfig(), mgr.GetHTTPClient(), mgr.GetScheme(), s.cfg.Namespace); err != nil {
		return err
	}
	s.svc.events = newEvents(mgr.GetEventRecorder("relay-server"), s.replica)
	if err := s.setupControllers(mgr); err != nil {
		return err
	}

	lis, err := s.listen(s.opts.Listener, s.cfg.ListenAddress)
	if err != nil {
		return err
	}
	mlis, err := s.listen(s.opts.MetricsListener, s.cfg.MetricsAddress)
	if err != nil {
		lis.Close()
		return err
	}
	gs := s.grpcServer()

	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return mgr.Start(ctx) })
	g.Go(func() error {
		if !mgr.GetCache().WaitForCacheSync(ctx) || !s.secrets.WaitForCacheSync(ctx) {
			return ctx.Err()
		}
		_ = s.keys.load(ctx, s.secrets, s.opts.Clock.Now(), s.log)
		s.ready.Store(true)
		s.log.Info("serving relay", "address", lis.Addr().String(), "metrics", mlis.Addr().String())
		if err := gs.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			return fmt.Errorf("relay gRPC server failed: %w", err)
		}
		return nil
	})
	probes := probeserver.Handler(s.gatherer(), s.readiness)
	if s.cfg.EnableProfiling {
		probes = probeserver.WithProfiling(probes)
	}
	g.Go(func() error { return probeserver.Serve(ctx, mlis, probes) })
	g.Go(func() error {
		<-ctx.Done()
		s.ready.Store(false)
		stopped := make(chan struct{})
		// GracefulStop waits for every call to end, and an agent's
		// streams never end on their own: end them now, so that agents
		// reconnect to another replica at once rather than when the
		// wait below runs out.
		go func() { gs.GracefulStop(); close(stopped) }()
		if n := s.svc.conns.endAll(status.Errorf(codes.Unavailable, "relay-server replica %s is shutting down: reconnect", s.replica)); n > 0 {
			s.log.Info("shutting down: ended the agents' streams", "streams", n)
		}
		select {
		case <-stopped:
		case <-time.After(5 * time.Second):
			gs.Stop()
		}
		lis.Close()
		return nil
	})
	return g.Wait()
}

// The manager's client spends bootstrap tokens and reads each Renew's
// KubernetesCluster past the cache. Those requests are made holding a
// signing slot, so --max-concurrent-signing already bounds how many are in
// flight, and the API server's priority and fairness protects it. A
// client-side limit below the signing rate only makes the calls wait while
// they hold their slots, and every other call is refused for overload: at
// 50 requests a second, a renewal storm of 10,000 agents renewed 8,808
// before their certificates expired (make bench); at 1,000, all of them.
// A configuration that sets its own limits keeps them.
const (
	managerQPS   = 1000
	managerBurst = 2000
)

func managerConfig(rc *rest.Config) *rest.Config {
	if rc.QPS != 0 || rc.RateLimiter != nil {
		return rc
	}
	cfg := rest.CopyConfig(rc)
	cfg.QPS, cfg.Burst = managerQPS, managerBurst
	return cfg
}

func (s *Server) listen(given net.Listener, addr string) (net.Listener, error) {
	if given != nil {
		return given, nil
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("failed to listen on %s: %w", addr, err)
	}
	return lis, nil
}

func (s *Server) setupControllers(mgr ctrl.Manager) error {
	if err := s.watchSecrets(mgr); err != nil {
		return err
	}
	err := ctrl.NewControllerManagedBy(mgr).Named("kubernetes-clusters").
		// Evictions follow the spec (revocation) and the UID, never the
		// status the replicas write.
		For(&meshv1alpha1.KubernetesCluster{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).WithOptions(everyreplica.ControllerOptions()).
		Complete(reconcile.Func(func(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
			var kc meshv1alpha1.KubernetesCluster
			err := mgr.GetClient().Get(ctx, req.NamespacedName, &kc)
			if apierrors.IsNotFound(err) || (err == nil && kc.DeletionTimestamp != nil) {
				if n := s.svc.conns.drop(req.Name); n > 0 {
					s.log.Info("cluster deregistered: dropped its streams", "cluster", req.Name, "streams", n)
				}
				s.svc.status.forget(req.Name)
				return reconcile.Result{}, nil
			}
			if err != nil {
				return reconcile.Result{}, client.IgnoreNotFound(err)
			}
			s.svc.evictRefused(&kc)
			return reconcile.Result{}, nil
		}))
	if err != nil {
		return fmt.Errorf("failed to set up the KubernetesCluster watcher: %w", err)
	}
	if err := mgr.Add(everyreplica.Runnable(func(ctx context.Context) error { return s.svc.runExpiry(ctx, s.opts.Clock) })); err != nil {
		return fmt.Errorf("failed to add the client certificate expiry check: %w", err)
	}
	if err := s.setupStatus(mgr); err != nil {
		return err
	}
	if err := s.setupRotation(mgr); err != nil {
		return err
	}
	return s.setupTrust(mgr)
}

// setupRotation adds the rotation of the generated certificates (the
// leader) and the renewal planner (every replica).
func (s *Server) setupRotation(mgr ctrl.Manager) error {
	if s.cfg.Insecure {
		return nil
	}
	rot := &rotation{
		cfg: s.cfg, client: mgr.GetClient(), secrets: s.secrets, clusters: mgr.GetClient(),
		rec: mgr.GetEventRecorder("relay-server"), metrics: s.metrics.rotation, clock: s.opts.Clock, log: s.log.WithName("rotation"),
		publish: s.publishBundle,
	}
	if err := mgr.Add(rot); err != nil {
		return fmt.Errorf("failed to add the certificate rotation: %w", err)
	}
	if s.cfg.DisableCa {
		return nil
	}
	planner := &renewalPlanner{
		ns: s.cfg.Namespace, conns: s.svc.conns, keys: s.keys, clusters: mgr.GetClient(), budget: s.cfg.RenewalBudget,
		metrics: s.metrics.rotation, clock: s.opts.Clock, log: s.log.WithName("renewals"),
	}
	if err := mgr.Add(everyreplica.Runnable(planner.run)); err != nil {
		return fmt.Errorf("failed to add the renewal planner: %w", err)
	}
	return nil
}

// setupTrust registers the RootTrustPolicy reconciler, which shares the
// trust state, pending results and policy queue of the relay streams'
// trust, and trust's renewal tick.
func (s *Server) setupTrust(mgr ctrl.Manager) error {
	if s.cfg.Insecure {
		// A policy's root is a real CA: insecure mode signs with none.
		return nil
	}
	t := s.svc.trust
	r := newTrustReconciler(trustReconcilerOptions{
		Client: mgr.GetClient(), API: mgr.GetAPIReader(), Namespace: s.cfg.Namespace, RelaySecrets: relaySecretsOf(s.cfg),
		State: t.State, Results: t.Results, Queue: t.Queue, CheckAll: t.checkAll,
		Metrics: s.metrics, Clock: s.opts.Clock, Log: t.Log,
	})
	if err := r.setup(mgr); err != nil {
		return err
	}
	if err := mgr.Add(everyreplica.Runnable(t.run)); err != nil {
		return fmt.Errorf("failed to add the Istio intermediate renewal check: %w", err)
	}
	return nil
}

// connBufferBytes is the write buffer of one agent connection, and its read
// buffer in insecure mode; gRPC's default is 32 KiB each.
const connBufferBytes = 4 << 10

func (s *Server) grpcServer() *grpc.Server {
	var creds grpccreds.TransportCredentials = closableCreds{insecure.NewCredentials()}
	// Agents hold their streams open and send little, so a connected agent
	// should cost little (see make bench). Over TLS, gRPC reads the
	// connection directly: tls.Conn already buffers a decrypted record, and
	// a second buffer would hold 4 KiB per agent for nothing. gRPC returns
	// the write buffer to a pool after each flush by default.
	readBuffer := 0
	opts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(maxMessageBytes),
		grpc.MaxHeaderListSize(maxHeaderListBytes),
		grpc.MaxConcurrentStreams(maxStreamsPerConnection),
		grpc.ConnectionTimeout(handshakeTimeout),
		grpc.WriteBufferSize(connBufferBytes),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.ChainUnaryInterceptor(s.metrics.grpc.unary),
		grpc.ChainStreamInterceptor(s.metrics.grpc.stream),
	}
	if s.cfg.Insecure {
		// No caller has a certificate here (tests only): the bounds on
		// callers without one would cut every agent off.
		readBuffer = connBufferBytes
	} else {
		creds = tlsCreds{config: s.keys.tlsConfig(), limits: s.svc.calls}
		opts = append(opts, grpc.InTapHandle(s.svc.calls.tap))
	}
	gs := grpc.NewServer(append(opts, grpc.Creds(creds), grpc.ReadBufferSize(readBuffer))...)
	relayv1.RegisterRelayServer(gs, s.svc)
	s.metrics.grpc.initialize(gs)
	return gs
}

// gatherer is what /metrics serves: relay-server's metrics beside
// controller-runtime's registry.
func (s *Server) gatherer() prometheus.Gatherer {
	return prometheus.Gatherers{ctrlmetrics.Registry, s.registry}
}

func (s *Server) readiness() error {
	switch {
	case !s.ready.Load():
		return errors.New("caches are syncing")
	case !s.cfg.Insecure && s.keys.server.Load() == nil:
		return fmt.Errorf("no valid server certificate in secret %s", s.cfg.TLSSecret.NamespacedName(s.cfg.Namespace))
	case !s.cfg.Insecure:
		return s.keys.admitsClients()
	}
	return nil
}
