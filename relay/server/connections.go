package server

import (
	"crypto/x509"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshrelay/meshrelay/pkg/pki"
	relayv1 "github.com/meshrelay/meshrelay/relay/api/v1"
)

// streamKind is the direction of a long-lived agent stream: push (agent to
// server), pull (server to agent), or connect (both, on one stream).
type streamKind int

const (
	pushStream streamKind = iota
	pullStream
	connectStream
)

func (k streamKind) String() string {
	switch k {
	case pushStream:
		return "push"
	case pullStream:
		return "pull"
	}
	return "connect"
}

// pushes reports whether a stream of kind carries the agent's messages, and
// pulls whether it carries the server's instructions. A connect stream does
// both, and is counted everywhere as one push and one pull stream: in the
// metrics, in KubernetesCluster status and against maxStreamsPerCluster.
func (k streamKind) pushes() bool { return k != pullStream }
func (k streamKind) pulls() bool  { return k != pushStream }

// weight is how many streams s counts as: two for a connect stream.
func (s *stream) weight() int {
	if s.kind == connectStream {
		return 2
	}
	return 1
}

// instructionBuffer is how many instructions wait for one pull or Connect
// stream.
// Instructions are rare (a renewal request, a new trust bundle), and one
// that does not fit is dropped for that stream, never blocking the sender.
const instructionBuffer = 4

// connections tracks what the server knows of each cluster: its open push
// and pull streams, how many it has opened, and when its client
// certificate expires. It delivers instructions to the pull streams, drops
// every stream of a cluster whose registration is deleted, and is the
// Prometheus collector of the per-cluster series. Those series are made
// at scrape time from one small record per cluster rather than kept as
// metric children (four per cluster, 2.4 KiB per agent at 10,000 agents;
// see make bench).
type connections struct {
	mu       sync.Mutex
	clusters map[string]*clusterState
	// now tells the time of what is seen; onChange, when set, is called
	// (without the lock) with a cluster whose streams, certificate or agent
	// version changed, for the status writer.
	now      func() time.Time
	onChange func(cluster string)
}

// clusterState is one cluster's record.
type clusterState struct {
	streams []*stream
	// opened counts the streams opened, by kind.
	opened [2]uint64
	// clientNotAfter is the client certificate's expiry in Unix seconds, as
	// last issued or reported; 0 when unknown.
	clientNotAfter int64
	// istio is the cluster's Istio intermediate CA as last reported; nil
	// when the cluster has none of ours.
	istio *istioExpiry
	// lastSeen is when this replica last heard from the cluster (a stream
	// opened or closed, a certificate issued), in Unix seconds.
	lastSeen int64
	// agentVersion is what its newest status reported.
	agentVersion string
	// trustBundle is the trust bundle its newest status acknowledged
	// (hex SHA-256), empty before one did.
	trustBundle string
	// cert is the newest client certificate issued or seen at a
	// handshake; nil until one is.
	cert *certSummary
}

// certSummary is what status says of a client certificate.
type certSummary struct {
	serial, issuer                string
	notBefore, notAfter, issuedAt time.Time
	// issuerSHA256 and rootSHA256 fingerprint the certificate's direct
	// issuer and the root its chain ends at; empty when unknown.
	issuerSHA256, rootSHA256 string
}

// Bounds of what status says of a certificate: a serial of at most 20
// octets (RFC 5280), and the issuer's common name, which its CA chose.
const (
	maxSerialField = 40
	maxIssuerField = 256
)

// summarize describes cert; chain, when known, runs from cert to its root
// (a verified chain, or the one relay-server signed it with).
func summarize(cert *x509.Certificate, chain []*x509.Certificate) *certSummary {
	sum := &certSummary{
		serial:    truncate(serialOf(cert), maxSerialField),
		issuer:    truncate(strings.ToValidUTF8(cert.Issuer.CommonName, "?"), maxIssuerField),
		notBefore: cert.NotBefore, notAfter: cert.NotAfter, issuedAt: pki.IssuedAt(cert),
	}
	if len(chain) >= 2 && chain[0].Equal(cert) {
		sum.issuerSHA256, sum.rootSHA256 = pki.Fingerprint(chain[1]), pki.Fingerprint(chain[len(chain)-1])
	}
	return sum
}

// truncate cuts s to at most max bytes on a rune boundary, ending with
// "..." when it cut.
func truncate(s string, max int) string {
	if len(s) <= max {
		return s
	}
	cut := max - len("...")
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}

// istioExpiry is a cluster's Istio intermediate: its policy and expiry.
type istioExpiry struct {
	policy   string
	notAfter int64
}

type stream struct {
	kind streamKind
	// cert is the client certificate the stream's connection proved its
	// cluster with; nil in insecure mode.
	cert *x509.Certificate
	// chains are the chains its connection's handshake verified, checked
	// again when the admitted client issuers change; nil in insecure mode.
	chains [][]*x509.Certificate
	// dropped is closed when the stream's cluster is dropped, or the stream
	// evicted.
	dropped chan struct{}
	// ended is set with dropped closed, under the connections lock, for
	// the sweeps to read without a channel operation per stream.
	ended bool
	// reason, set before dropped is closed, is the status an evicted
	// stream ends with; nil when its cluster was deregistered.
	reason error
	// closeConn, when set, closes the stream's connection on a drop, which
	// ends a push or connect stream blocked in Recv.
	closeConn func()
	// instructions is the queue of a pull or connect stream; nil for a
	// push stream.
	instructions chan *relayv1.Instruction
	// wake, when set (a connect stream), is called after an instruction
	// was queued: the stream's handler receives, so something else must
	// send.
	wake func()
}

var (
	pushConnectedDesc = prometheus.NewDesc("relay_push_clients_connected",
		"Open push streams (agent to server), by cluster; a Connect stream counts as one push and one pull stream.", []string{"cluster"}, nil)
	pullConnectedDesc = prometheus.NewDesc("relay_pull_clients_connected",
		"Open pull streams (server to agent), by cluster; a Connect stream counts as one push and one pull stream.", []string{"cluster"}, nil)
	openedDesc = prometheus.NewDesc("relay_streams_opened_total",
		"Push and pull streams opened, by cluster and stream (a Connect stream counts as one of each); a steady value while connected means no reconnects.",
		[]string{"cluster", "stream"}, nil)
	clientExpiryDesc = prometheus.NewDesc("relay_client_certificate_expiry_timestamp_seconds",
		"NotAfter of each cluster's client certificate, as last issued or reported, in Unix seconds.", []string{"cluster"}, nil)
	istioExpiryDesc = prometheus.NewDesc("relay_istio_intermediate_expiry_timestamp_seconds",
		"NotAfter of each cluster's Istio intermediate CA (istio-system/cacerts), as its agent last reported, in Unix seconds.", []string{"cluster", "policy"}, nil)
)

func newConnections() *connections {
	return &connections{clusters: map[string]*clusterState{}, now: time.Now}
}

// changed tells onChange that cluster changed. c.mu must not be held.
func (c *connections) changed(cluster string) {
	if c.onChange != nil {
		c.onChange(cluster)
	}
}

// sawCert records cert as cluster's newest client certificate unless the
// one recorded is newer (by NotBefore). c.mu must be held.
func (st *clusterState) sawCert(cert *x509.Certificate, chain []*x509.Certificate) {
	if cert == nil {
		return
	}
	// Validity times have a resolution of one second: of two certificates
	// issued in the same second, the one issued or seen last is newest.
	switch {
	case st.cert == nil || !cert.NotBefore.Before(st.cert.notBefore) && serialOf(cert) != st.cert.serial:
		st.cert = summarize(cert, chain)
	case serialOf(cert) == st.cert.serial && st.cert.rootSHA256 == "" && len(chain) >= 2:
		// Seen first without its chain: now the fingerprints are known.
		st.cert = summarize(cert, chain)
	}
}

// issued records a client certificate signed for cluster at now, with the
// chain it was signed with (from it to the root).
func (c *connections) issued(cluster string, cert *x509.Certificate, chain []*x509.Certificate, now time.Time) {
	c.mu.Lock()
	st := c.state(cluster)
	st.clientNotAfter = cert.NotAfter.Unix()
	st.sawCert(cert, chain)
	st.lastSeen = now.Unix()
	c.mu.Unlock()
	c.changed(cluster)
}

// setAgentVersion records the agent version cluster's status reported.
func (c *connections) setAgentVersion(cluster, version string) {
	c.mu.Lock()
	st := c.state(cluster)
	same := st.agentVersion == version
	st.agentVersion = version
	c.mu.Unlock()
	if !same {
		c.changed(cluster)
	}
}

// setTrustBundle records the trust bundle cluster's status acknowledged.
func (c *connections) setTrustBundle(cluster, sha string) {
	c.mu.Lock()
	st := c.state(cluster)
	same := st.trustBundle == sha
	st.trustBundle = sha
	c.mu.Unlock()
	if !same {
		c.changed(cluster)
	}
}

// replicaView is what this replica knows of one cluster, for its status
// entry.
type replicaView struct {
	known        bool
	push, pull   int
	lastSeen     int64
	agentVersion string
	trustBundle  string
	cert         *certSummary
	// streamCert is the oldest client certificate (by NotBefore) that
	// the cluster's open streams here presented: the one in use that a
	// rotation must wait for, which cert, the newest issued or seen, may
	// not be (a renewed certificate its agent did not store). Nil
	// without a stream with a certificate. Only entryView sets it.
	streamCert *certSummary
}

// view returns what this replica knows of cluster.
func (c *connections) view(cluster string) replicaView {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.clusters[cluster]
	if st == nil {
		return replicaView{}
	}
	v := replicaView{known: true, lastSeen: st.lastSeen, agentVersion: st.agentVersion, trustBundle: st.trustBundle, cert: st.cert}
	for _, s := range st.streams {
		if s.kind.pushes() {
			v.push++
		}
		if s.kind.pulls() {
			v.pull++
		}
	}
	return v
}

// entryView is view with streamCert, for cluster's status entry.
func (c *connections) entryView(cluster string) replicaView {
	v := c.view(cluster)
	if v.known {
		v.streamCert = c.inUse(cluster)
	}
	return v
}

// inUse returns the oldest client certificate (by NotBefore) that
// cluster's open streams here presented, nil without one. It fingerprints
// the certificate's chain: the renewal planner calls it only while a
// replaced CA is still admitted.
func (c *connections) inUse(cluster string) *certSummary {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.clusters[cluster]
	if st == nil {
		return nil
	}
	var oldest *stream
	for _, s := range st.streams {
		if s.cert != nil && !s.ended && (oldest == nil || s.cert.NotBefore.Before(oldest.cert.NotBefore)) {
			oldest = s
		}
	}
	if oldest == nil {
		return nil
	}
	var chain []*x509.Certificate
	if len(oldest.chains) > 0 {
		chain = oldest.chains[0]
	}
	sum := summarize(oldest.cert, chain)
	if st.cert != nil && *st.cert == *sum {
		return st.cert
	}
	return sum
}

// names returns the clusters this replica has a record of.
func (c *connections) names() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	names := make([]string, 0, len(c.clusters))
	for name := range c.clusters {
		names = append(names, name)
	}
	return names
}

// pullClusters returns the clusters with a pull (or connect) stream open
// on this replica.
func (c *connections) pullClusters() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var names []string
	for name, st := range c.clusters {
		for _, s := range st.streams {
			if s.kind.pulls() {
				names = append(names, name)
				break
			}
		}
	}
	return names
}

// sendAll offers in to every pull and Connect stream of every cluster.
func (c *connections) sendAll(in *relayv1.Instruction) {
	for _, cluster := range c.pullClusters() {
		c.send(cluster, in)
	}
}

// state returns cluster's record, making it. c.mu must be held.
func (c *connections) state(cluster string) *clusterState {
	st := c.clusters[cluster]
	if st == nil {
		st = &clusterState{}
		c.clusters[cluster] = st
	}
	return st
}

// open records a stream of cluster. Its dropped channel closes, and
// closeConn (if not nil) is called, when the cluster is dropped; a pull or
// connect stream gets the queue its instructions arrive on. close must be called
// with the stream when it ends. chains are the verified chains of cert's
// connection, kept for evictWhere.
func (c *connections) open(cluster string, kind streamKind, closeConn func(), cert *x509.Certificate, chains ...[]*x509.Certificate) *stream {
	s := newStream(kind, closeConn, cert, chains...)
	c.record(cluster, s, 0)
	return s
}

// newStream makes a stream of kind, not recorded yet.
func newStream(kind streamKind, closeConn func(), cert *x509.Certificate, chains ...[]*x509.Certificate) *stream {
	s := &stream{kind: kind, cert: cert, chains: chains, dropped: make(chan struct{}), closeConn: closeConn}
	if kind.pulls() {
		s.instructions = make(chan *relayv1.Instruction, instructionBuffer)
	}
	return s
}

// record adds s to cluster's open streams, unless that would make more
// than max streams open (0: no cap; a connect stream counts as two),
// checked under the same lock as the adding so that streams opening at
// once cannot race past the cap. It returns how many streams of cluster
// were open before, and whether s was recorded.
func (c *connections) record(cluster string, s *stream, max int) (open int, recorded bool) {
	c.mu.Lock()
	st := c.state(cluster)
	open = weigh(st.streams)
	if max > 0 && open+s.weight() > max {
		c.mu.Unlock()
		return open, false
	}
	st.streams = append(st.streams, s)
	if s.kind.pushes() {
		st.opened[pushStream]++
	}
	if s.kind.pulls() {
		st.opened[pullStream]++
	}
	var chain []*x509.Certificate
	if len(s.chains) > 0 {
		chain = s.chains[0]
	}
	st.sawCert(s.cert, chain)
	st.lastSeen = c.now().Unix()
	c.mu.Unlock()
	c.changed(cluster)
	return open, true
}

// openStreams returns how many streams of cluster are open on this
// replica, push and pull together (a connect stream counts as two).
func (c *connections) openStreams(cluster string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return weigh(c.streams(cluster))
}

// weigh returns how many streams streams count as.
func weigh(streams []*stream) int {
	n := 0
	for _, s := range streams {
		n += s.weight()
	}
	return n
}

// close forgets the stream s of cluster; closing it again does nothing.
func (c *connections) close(cluster string, s *stream) {
	c.mu.Lock()
	st := c.clusters[cluster]
	if st == nil {
		c.mu.Unlock()
		return
	}
	for i, o := range st.streams {
		if o == s {
			st.streams = append(st.streams[:i], st.streams[i+1:]...)
			if len(st.streams) == 0 {
				st.streams = nil
			}
			st.lastSeen = c.now().Unix()
			c.mu.Unlock()
			c.changed(cluster)
			return
		}
	}
	c.mu.Unlock()
}

// setClientExpiry records when cluster's client certificate expires.
func (c *connections) setClientExpiry(cluster string, notAfter int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.state(cluster).clientNotAfter = notAfter
}

// setIstioExpiry records cluster's Istio intermediate under policy.
func (c *connections) setIstioExpiry(cluster, policy string, notAfter int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.state(cluster).istio = &istioExpiry{policy: policy, notAfter: notAfter}
}

// send offers in to every pull and connect stream of cluster and returns
// how many took it. A slow agent never blocks the sender: an instruction that does not
// fit a stream's queue is dropped for that stream, and the agent catches
// up when it reconnects (trust bundle first, renewal on its own schedule).
func (c *connections) send(cluster string, in *relayv1.Instruction) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, s := range c.streams(cluster) {
		if !s.kind.pulls() || s.ended {
			// An evicted stream takes nothing more, though its
			// connection stays open for closeGrace.
			continue
		}
		select {
		case s.instructions <- in:
			n++
			if s.wake != nil {
				s.wake()
			}
		default:
		}
	}
	return n
}

// drop ends every open stream of cluster: each stream's handler sees
// dropped closed (or its connection closed), returns and calls close.
func (c *connections) drop(cluster string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	streams := c.streams(cluster)
	for _, s := range streams {
		s.end(nil)
	}
	if st := c.clusters[cluster]; st != nil {
		// Its certificates are refused now, and nothing of them may carry
		// over to a cluster registered again under the same name: only
		// the stream counts stay (the gauges read 0 once they close).
		*st = clusterState{streams: st.streams, opened: st.opened}
	}
	return len(streams)
}

// endAll ends every open stream with reason, as the replica stops, and
// returns how many it ended.
func (c *connections) endAll(reason error) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, st := range c.clusters {
		for _, s := range st.streams {
			if !s.ended {
				s.end(reason)
				n++
			}
		}
	}
	return n
}

// evictWhere ends each open stream (with a certificate, not ended yet) of
// cluster, or of every cluster when cluster is "", that refused refuses,
// with that refusal as its reason. A KubernetesCluster change looks at its
// own cluster's streams only, so that a resync of every cluster costs one
// pass over the streams, not one per cluster. It walks under the lock, with
// no timer or goroutine per stream (BenchmarkExpireSweep measures a pass
// over 20,000 streams).
func (c *connections) evictWhere(cluster string, refused func(cluster string, s *stream) error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	judge := func(name string, st *clusterState) {
		for _, s := range st.streams {
			if s.cert == nil || s.ended {
				continue
			}
			if err := refused(name, s); err != nil {
				s.end(err)
			}
		}
	}
	if cluster != "" {
		if st := c.clusters[cluster]; st != nil {
			judge(cluster, st)
		}
		return
	}
	for name, st := range c.clusters {
		judge(name, st)
	}
}

// end tells the stream's handler to return with reason (nil: its cluster
// was deregistered) and closes its connection if it has a closer. Ending a
// stream again does nothing. c.mu must be held.
func (s *stream) end(reason error) {
	if s.ended {
		return // ended before and not closed yet
	}
	s.ended = true
	s.reason = reason
	close(s.dropped)
	if s.closeConn != nil {
		s.closeConn()
	}
}

// wasDropped reports whether the stream's cluster was dropped.
func (s *stream) wasDropped() bool {
	select {
	case <-s.dropped:
		return true
	default:
		return false
	}
}

// streams returns cluster's open streams. c.mu must be held.
func (c *connections) streams(cluster string) []*stream {
	if st := c.clusters[cluster]; st != nil {
		return st.streams
	}
	return nil
}

// Describe implements prometheus.Collector.
func (c *connections) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{pushConnectedDesc, pullConnectedDesc, openedDesc, clientExpiryDesc, istioExpiryDesc} {
		ch <- d
	}
}

// clusterSample is a copy of one cluster's record taken for a scrape.
type clusterSample struct {
	name           string
	connected      [2]int
	opened         [2]uint64
	clientNotAfter int64
	istio          *istioExpiry
}

// Collect implements prometheus.Collector. It copies the records under the
// lock and builds the series after, so that a scrape never holds up a
// stream opening.
func (c *connections) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	samples := make([]clusterSample, 0, len(c.clusters))
	for name, st := range c.clusters {
		s := clusterSample{name: name, opened: st.opened, clientNotAfter: st.clientNotAfter, istio: st.istio}
		for _, o := range st.streams {
			if o.kind.pushes() {
				s.connected[pushStream]++
			}
			if o.kind.pulls() {
				s.connected[pullStream]++
			}
		}
		samples = append(samples, s)
	}
	c.mu.Unlock()
	for _, s := range samples {
		if s.opened != [2]uint64{} {
			ch <- prometheus.MustNewConstMetric(pushConnectedDesc, prometheus.GaugeValue, float64(s.connected[pushStream]), s.name)
			ch <- prometheus.MustNewConstMetric(pullConnectedDesc, prometheus.GaugeValue, float64(s.connected[pullStream]), s.name)
			for _, k := range []streamKind{pushStream, pullStream} {
				ch <- prometheus.MustNewConstMetric(openedDesc, prometheus.CounterValue, float64(s.opened[k]), s.name, k.String())
			}
		}
		if s.clientNotAfter > 0 {
			ch <- prometheus.MustNewConstMetric(clientExpiryDesc, prometheus.GaugeValue, float64(s.clientNotAfter), s.name)
		}
		if s.istio != nil {
			ch <- prometheus.MustNewConstMetric(istioExpiryDesc, prometheus.GaugeValue, float64(s.istio.notAfter), s.name, s.istio.policy)
		}
	}
}
