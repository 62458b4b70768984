package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	grpccreds "google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/meshrelay/meshrelay/internal/testenv"
	meshv1alpha1 "github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/pkg/pki"
	"github.com/meshrelay/meshrelay/pkg/relaysecret"
)

// What the rotation tests watch while relay-server rotates its
// certificates: a prober per workload cluster that makes fresh mutual TLS
// handshakes as the cluster's agent would, the agents' streams, and the
// RelayTrust's phases.

// agentTrust reads, from one workload cluster, what its agent connects
// with now: the roots it trusts, which the agent's trust bundle folder
// holds (relay-root-tls-secret's ca.crt and the cluster's
// ClusterTrustBundle of the relay roots, where that API exists; the agent
// rewrites both when the server sends a new bundle), and its client
// certificate (relay-client-tls-secret). It reads from an informer cache,
// so each probe sees what is stored at that moment without a request to
// the API server.
type agentTrust struct {
	cluster string
	cache   cache.Cache
	// bundles says whether the cluster serves ClusterTrustBundles.
	bundles bool
}

// quietCaches gives the caches' informers, which log through
// controller-runtime's global logger, one that drops their lines.
var quietCaches sync.Once

// newAgentTrust starts a cache of the relay secrets of cluster c (and of
// its ClusterTrustBundles) until ctx ends.
func newAgentTrust(ctx context.Context, c *testenv.Cluster) (*agentTrust, error) {
	quietCaches.Do(func() { ctrllog.SetLogger(logr.Discard()) })
	ca, err := cache.New(c.Config, cache.Options{
		Scheme:            c.Client.Scheme(),
		DefaultNamespaces: map[string]cache.Config{config.DefaultNamespace: {}},
	})
	if err != nil {
		return nil, fmt.Errorf("%s: failed to make a cache: %w", c.Name, err)
	}
	a := &agentTrust{cluster: c.Name, cache: ca}
	_, err = c.Client.RESTMapper().RESTMapping(schema.GroupKind{Group: certificatesv1.GroupName, Kind: "ClusterTrustBundle"}, certificatesv1.SchemeGroupVersion.Version)
	a.bundles = err == nil
	go func() { _ = ca.Start(ctx) }()
	// The first Get of a kind starts its informer and waits for it.
	var s corev1.Secret
	if err := ca.Get(ctx, types.NamespacedName{Namespace: config.DefaultNamespace, Name: config.DefaultRootTLSSecret}, &s); err != nil && !apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("%s: failed to read secret %s: %w", c.Name, config.DefaultRootTLSSecret, err)
	}
	if a.bundles {
		var b certificatesv1.ClusterTrustBundle
		if err := ca.Get(ctx, types.NamespacedName{Name: meshv1alpha1.TrustBundleName(config.DefaultNamespace)}, &b); err != nil && !apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("%s: failed to read ClusterTrustBundle %s: %w", c.Name, meshv1alpha1.TrustBundleName(config.DefaultNamespace), err)
		}
	}
	return a, nil
}

// read returns the roots the agent trusts and its client certificate,
// with its chain, as stored now.
func (a *agentTrust) read(ctx context.Context) ([]*x509.Certificate, *relaysecret.Material, error) {
	var roots []*x509.Certificate
	add := func(pemBytes []byte, where string) error {
		certs, err := pki.DecodeCertificates(pemBytes)
		if err != nil {
			return fmt.Errorf("%s: %w", where, err)
		}
		for _, c := range certs {
			if !slices.ContainsFunc(roots, c.Equal) {
				roots = append(roots, c)
			}
		}
		return nil
	}
	var root corev1.Secret
	rootKey := types.NamespacedName{Namespace: config.DefaultNamespace, Name: config.DefaultRootTLSSecret}
	switch err := a.cache.Get(ctx, rootKey, &root); {
	case apierrors.IsNotFound(err):
	case err != nil:
		return nil, nil, err
	default:
		if err := add(root.Data[relaysecret.KeyCACert], "secret "+rootKey.String()+" ca.crt"); err != nil {
			return nil, nil, err
		}
	}
	if a.bundles {
		var b certificatesv1.ClusterTrustBundle
		name := meshv1alpha1.TrustBundleName(config.DefaultNamespace)
		switch err := a.cache.Get(ctx, types.NamespacedName{Name: name}, &b); {
		case apierrors.IsNotFound(err):
		case err != nil:
			return nil, nil, err
		default:
			if err := add([]byte(b.Spec.TrustBundle), "ClusterTrustBundle "+name); err != nil {
				return nil, nil, err
			}
		}
	}
	if len(roots) == 0 {
		return nil, nil, fmt.Errorf("no relay root: neither secret %s nor a ClusterTrustBundle holds one", rootKey)
	}
	var client corev1.Secret
	clientKey := types.NamespacedName{Namespace: config.DefaultNamespace, Name: config.DefaultClientTLSSecret}
	if err := a.cache.Get(ctx, clientKey, &client); err != nil {
		return nil, nil, fmt.Errorf("secret %s: %w", clientKey, err)
	}
	certs, err := pki.DecodeCertificates(client.Data[relaysecret.KeyTLSCert])
	if err != nil {
		return nil, nil, fmt.Errorf("secret %s tls.crt: %w", clientKey, err)
	}
	key, err := pki.DecodePrivateKey(client.Data[relaysecret.KeyTLSKey])
	if err != nil {
		return nil, nil, fmt.Errorf("secret %s tls.key: %w", clientKey, err)
	}
	return roots, &relaysecret.Material{Cert: certs[0], Chain: certs[1:], Key: key}, nil
}

// probeMethod is the call each probe makes once connected. relay-server
// serves no such service, so it answers Unimplemented, which it can only
// do after the handshake, its check of the client certificate (which
// TLS 1.3 reports to the client only on its first read) and the HTTP/2
// exchange have all succeeded; it opens no stream and changes nothing.
const probeMethod = "/grpc.health.v1.Health/Check"

// probeEvery is how often each prober makes a handshake.
const probeEvery = 100 * time.Millisecond

// maxFailuresKept bounds the failures a prober keeps the text of.
const maxFailuresKept = 10

// seenCert is a certificate a prober met, and when first.
type seenCert struct {
	cert  *x509.Certificate
	first time.Time
}

// prober makes, every probeEvery, a fresh mutual TLS handshake to
// relay-server from one workload cluster exactly as its agent makes it:
// SNI = the authority, the roots the agent trusts now, the client
// certificate the agent holds now, h2 through gRPC's TLS credentials, no
// session resumption, and the agent's pin of the server certificate's
// issuer; then one small gRPC call. It counts the probes that succeeded
// and failed, and records every server certificate, root, client
// certificate and client issuer it met.
type prober struct {
	cluster string
	addr    string
	trust   *agentTrust
	ctx     context.Context
	*poller

	mu sync.Mutex
	// down is set while relay-server is stopped on purpose; epoch counts
	// the changes of down, so a probe that overlapped one is not counted.
	down     bool
	epoch    int
	ok, fail int
	skipped  int
	failures []string
	// served, roots, clients and issuers are by SHA-256 fingerprint: the
	// server certificates served, the roots the served chains ended at,
	// the client certificates presented and the CAs that issued them.
	served, roots, clients, issuers map[string]seenCert
}

// startProber starts probing relay-server at addr from cluster; stop ends
// it.
func startProber(ctx context.Context, c *testenv.Cluster, addr string) (*prober, error) {
	trust, err := newAgentTrust(ctx, c)
	if err != nil {
		return nil, err
	}
	p := &prober{cluster: c.Name, addr: addr, trust: trust, ctx: ctx,
		served: map[string]seenCert{}, roots: map[string]seenCert{}, clients: map[string]seenCert{}, issuers: map[string]seenCert{}}
	p.poller = poll(probeEvery, p.probe)
	return p, nil
}

func (p *prober) probe() {
	p.mu.Lock()
	down, epoch := p.down, p.epoch
	p.mu.Unlock()
	begun := time.Now()
	got, err := p.handshake()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, s := range []struct {
		into map[string]seenCert
		cert *x509.Certificate
	}{{p.served, got.served}, {p.roots, got.root}, {p.clients, got.client}, {p.issuers, got.issuer}} {
		if s.cert == nil {
			continue
		}
		if _, ok := s.into[pki.Fingerprint(s.cert)]; !ok {
			s.into[pki.Fingerprint(s.cert)] = seenCert{cert: s.cert, first: begun}
		}
	}
	switch {
	case down || p.down || epoch != p.epoch:
		p.skipped++
	case err == nil:
		p.ok++
	default:
		p.fail++
		if len(p.failures) < maxFailuresKept {
			p.failures = append(p.failures, fmt.Sprintf("%s: %s: %v", begun.Format("15:04:05.000"), p.cluster, err))
		}
	}
}

// probed is what one probe met.
type probed struct {
	served, root, client, issuer *x509.Certificate
}

// handshake makes one probe with what the agent holds now.
func (p *prober) handshake() (probed, error) {
	roots, own, err := p.trust.read(p.ctx)
	if err != nil {
		return probed{}, fmt.Errorf("cannot read what the agent connects with: %w", err)
	}
	return probeOnce(p.ctx, p.addr, roots, own)
}

// probeOnce makes a fresh mutual TLS connection to relay-server at addr as
// an agent that trusts roots and holds own, and one gRPC call on it.
func probeOnce(ctx context.Context, addr string, roots []*x509.Certificate, own *relaysecret.Material) (probed, error) {
	got := probed{client: own.Cert}
	issuer, issuerErr := own.Issuer(roots...)
	got.issuer = issuer
	pool := x509.NewCertPool()
	for _, r := range roots {
		pool.AddCert(r)
	}
	cfg := &tls.Config{
		ServerName:   config.DefaultAuthority,
		RootCAs:      pool,
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{*own.TLSCertificate()},
		// The agent's pin: the server certificate's direct issuer is the
		// CA that issued the client certificate, or a root itself.
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.VerifiedChains) == 0 {
				return errors.New("relay server certificate did not verify")
			}
			chain := cs.VerifiedChains[0]
			got.served, got.root = chain[0], chain[len(chain)-1]
			if issuerErr != nil {
				return fmt.Errorf("cannot pin the relay server's issuer: %w", issuerErr)
			}
			for _, chain := range cs.VerifiedChains {
				if len(chain) >= 2 && (pki.SameCA(chain[1], issuer) || pki.ContainsCA(roots, chain[1])) {
					return nil
				}
			}
			return fmt.Errorf("relay server certificate %q was issued by %s, but the agent pins %s or a relay root", chain[0].Subject.CommonName, pki.CAName(chain[1]), pki.CAName(issuer))
		},
	}
	conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(grpccreds.NewTLS(cfg)))
	if err != nil {
		return got, err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	err = conn.Invoke(ctx, probeMethod, &emptypb.Empty{}, &emptypb.Empty{})
	if c := status.Code(err); c == codes.OK || c == codes.Unimplemented {
		return got, nil
	}
	return got, err
}

// serverDown marks relay-server stopped on purpose: probes until
// serverUp are not counted.
func (p *prober) serverDown() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = true
	p.epoch++
}

// serverUp marks relay-server ready again: probes begun from now on count.
func (p *prober) serverUp() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = false
	p.epoch++
}

// counts returns the probes that succeeded, failed and were not counted,
// and the first failures.
func (p *prober) counts() (ok, failed, skipped int, failures []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.ok, p.fail, p.skipped, slices.Clone(p.failures)
}

// seen returns how many distinct server certificates, roots, client
// certificates and client issuers the prober met.
func (p *prober) seen() (served, roots, clients, issuers int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.served), len(p.roots), len(p.clients), len(p.issuers)
}

// probers are the probers of every workload cluster.
type probers []*prober

func startProbers(ctx context.Context, env *testenv.Env, addr string, workloads []string) (probers, error) {
	var ps probers
	for _, c := range workloads {
		p, err := startProber(ctx, env.Cluster(c), addr)
		if err != nil {
			ps.stop()
			return nil, err
		}
		ps = append(ps, p)
	}
	return ps, nil
}

func (ps probers) stop() {
	for _, p := range ps {
		p.stop()
	}
}

func (ps probers) serverDown() {
	for _, p := range ps {
		p.serverDown()
	}
}

func (ps probers) serverUp() {
	for _, p := range ps {
		p.serverUp()
	}
}

// counts sums the probers' counts.
func (ps probers) counts() (ok, failed, skipped int, failures []string) {
	for _, p := range ps {
		o, f, s, fs := p.counts()
		ok, failed, skipped = ok+o, failed+f, skipped+s
		failures = append(failures, fs...)
	}
	return ok, failed, skipped, failures
}

// distinct returns how many distinct certificates of one sort (picked by
// of) the probers met together.
func (ps probers) distinct(of func(*prober) map[string]seenCert) int {
	all := map[string]bool{}
	for _, p := range ps {
		p.mu.Lock()
		for k := range of(p) {
			all[k] = true
		}
		p.mu.Unlock()
	}
	return len(all)
}

// streamCounts are, by cluster, the counters that tell a dropped stream
// from one moved to a new connection: relay-server's
// relay_streams_opened_total of the push and pull streams, and the
// agent's relay_agent_stream_handovers_total (streams moved to a
// connection made with a renewed certificate before the old one closed:
// the server counts one opening per stream for each) and
// relay_agent_stream_reconnects_total (its connection ended and it
// connected again: its streams dropped).
type streamCounts map[string]struct{ push, pull, handovers, reconnects float64 }

// readStreamCounts scrapes the stream counters of each workload cluster
// from relay-server's metrics at serverMetrics and its agent's at
// agentMetrics[cluster] (host:port each).
func readStreamCounts(serverMetrics string, agentMetrics map[string]string, workloads []string) (streamCounts, error) {
	server := testenv.ScrapeMetrics("http://" + serverMetrics + "/metrics")
	if len(server) == 0 {
		return nil, fmt.Errorf("relay-server metrics at %s could not be read", serverMetrics)
	}
	out := streamCounts{}
	for _, c := range workloads {
		agent := testenv.ScrapeMetrics("http://" + agentMetrics[c] + "/metrics")
		var e struct{ push, pull, handovers, reconnects float64 }
		for name, into := range map[string]*float64{
			`relay_streams_opened_total{cluster="` + c + `",stream="push"}`: &e.push,
			`relay_streams_opened_total{cluster="` + c + `",stream="pull"}`: &e.pull,
		} {
			v, ok := server[name]
			if !ok {
				return nil, fmt.Errorf("relay-server's metrics have no %s", name)
			}
			*into = v
		}
		for name, into := range map[string]*float64{
			"relay_agent_stream_handovers_total":  &e.handovers,
			"relay_agent_stream_reconnects_total": &e.reconnects,
		} {
			v, ok := agent[name]
			if !ok {
				return nil, fmt.Errorf("the agent of %s has no %s in its metrics at %s", c, name, agentMetrics[c])
			}
			*into = v
		}
		out[c] = e
	}
	return out, nil
}

// drops compares counts with the counts before: each reconnect of an
// agent, and each opening of a stream on relay-server that no handover
// of the agent explains, is a dropped stream. It returns the handovers
// and the drops, described.
func (before streamCounts) drops(after streamCounts) (handovers float64, drops []string) {
	for c, a := range after {
		b := before[c]
		moved := a.handovers - b.handovers
		handovers += moved
		if d := a.reconnects - b.reconnects; d != 0 {
			drops = append(drops, fmt.Sprintf("the agent of %s reconnected %v times", c, d))
		}
		for _, s := range []struct {
			name          string
			before, after float64
		}{{"push", b.push, a.push}, {"pull", b.pull, a.pull}} {
			if opened := s.after - s.before; opened != moved {
				drops = append(drops, fmt.Sprintf("relay-server counted %v openings of %s's %s stream while its agent moved its streams %v times", opened, c, s.name, moved))
			}
		}
	}
	slices.Sort(drops)
	return handovers, drops
}

// streamGaps samples, every second, whether each workload cluster holds
// its push and pull streams, as relay-server and its agent count them,
// and records every sample in which one did not.
type streamGaps struct {
	*poller
	mu      sync.Mutex
	samples int
	gaps    []string
}

func watchStreams(serverMetrics string, agentMetrics map[string]string, workloads []string) *streamGaps {
	g := &streamGaps{}
	g.poller = poll(time.Second, func() {
		now := time.Now().Format(time.TimeOnly)
		server := testenv.ScrapeMetrics("http://" + serverMetrics + "/metrics")
		var gaps []string
		for _, c := range workloads {
			agent := testenv.ScrapeMetrics("http://" + agentMetrics[c] + "/metrics")
			// While an agent moves its streams to a new connection the
			// server may hold both for a moment.
			for _, s := range []string{"push", "pull"} {
				if v, ok := server[`relay_`+s+`_clients_connected{cluster="`+c+`"}`]; v < 1 {
					gaps = append(gaps, fmt.Sprintf("%s: relay-server counted %v %s streams of %s (scraped: %v)", now, v, s, c, ok))
				}
				if v, ok := agent[`relay_agent_stream_connected{stream="`+s+`"}`]; v != 1 {
					gaps = append(gaps, fmt.Sprintf("%s: the agent of %s had its %s stream at %v (scraped: %v)", now, c, s, v, ok))
				}
			}
		}
		g.mu.Lock()
		defer g.mu.Unlock()
		g.samples++
		g.gaps = append(g.gaps, gaps...)
	})
	return g
}

func (g *streamGaps) result() (int, []string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.samples, slices.Clone(g.gaps)
}

// trustLog reads the RelayTrust every half second and records each change
// of phase, with the roots and the clusters the phase waits for.
type trustLog struct {
	*poller
	mu     sync.Mutex
	last   *meshv1alpha1.RelayTrust
	phases []string
	errs   int
}

func watchTrust(ctx context.Context, c *testenv.Cluster) *trustLog {
	l := &trustLog{}
	l.poller = poll(500*time.Millisecond, func() {
		rt, err := readTrust(ctx, c)
		l.mu.Lock()
		defer l.mu.Unlock()
		if err != nil {
			l.errs++
			return
		}
		if l.last == nil || l.last.Status.Phase != rt.Status.Phase {
			l.phases = append(l.phases, fmt.Sprintf("%s %s%s", time.Now().Format(time.TimeOnly), phaseOf(rt), describeTrust(rt)))
		}
		l.last = rt
	})
	return l
}

// latest returns the RelayTrust last read, nil before the first read.
func (l *trustLog) latest() *meshv1alpha1.RelayTrust {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.last
}

func (l *trustLog) history() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.phases)
}

// readTrust reads the RelayTrust relay-server keeps on the management
// cluster c.
func readTrust(ctx context.Context, c *testenv.Cluster) (*meshv1alpha1.RelayTrust, error) {
	var rt meshv1alpha1.RelayTrust
	key := types.NamespacedName{Namespace: config.DefaultNamespace, Name: meshv1alpha1.RelayTrustName}
	if err := c.Client.Get(ctx, key, &rt); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("no RelayTrust %s on %s: is relay-server's leader keeping it?", key, c.Name)
		}
		return nil, fmt.Errorf("failed to read RelayTrust %s: %w", key, err)
	}
	return &rt, nil
}

// phaseOf is the RelayTrust's phase, Stable when it has none yet.
func phaseOf(rt *meshv1alpha1.RelayTrust) meshv1alpha1.RotationPhase {
	if rt.Status.Phase == "" {
		return meshv1alpha1.PhaseStable
	}
	return rt.Status.Phase
}

// describeTrust says, for a log line, what a RelayTrust's status holds
// beside its phase: the roots and who the phase waits for.
func describeTrust(rt *meshv1alpha1.RelayTrust) string {
	var b strings.Builder
	short := func(tc *meshv1alpha1.TrustCertificate) string {
		if tc == nil || len(tc.SHA256) < 12 {
			return "none"
		}
		return tc.SHA256[:12]
	}
	s := rt.Status
	fmt.Fprintf(&b, " (root %s", short(s.Root))
	if s.Incoming != nil {
		fmt.Fprintf(&b, ", incoming %s", short(s.Incoming))
	}
	if s.Outgoing != nil {
		fmt.Fprintf(&b, ", outgoing %s", short(s.Outgoing))
	}
	if s.Bundle != nil {
		fmt.Fprintf(&b, ", bundle of %d roots acknowledged by %d of %d", s.Bundle.Roots, s.Bundle.Acknowledged, s.Bundle.Connected)
	}
	for _, p := range s.Pending {
		fmt.Fprintf(&b, ", waits for %s (%s)", p.Cluster, p.Reason)
	}
	fmt.Fprintf(&b, "; rotations root %d, intermediate %d, server %d)", s.Rotations.Root, s.Rotations.Intermediate, s.Rotations.Server)
	return b.String()
}
