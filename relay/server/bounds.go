package server

import (
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshrelay/meshrelay/pkg/config"
)

// Reasons in relay_push_messages_ignored_total.
const (
	// ignoredUnknownPolicy: the message names a RootTrustPolicy that is not
	// loaded here or does not apply to the sender's cluster.
	ignoredUnknownPolicy = "unknown_policy"
	// ignoredOversized: a field is longer than relay.proto allows.
	ignoredOversized = "oversized"
	// ignoredMalformed: a field holds what it may not, such as a version
	// that is not printable ASCII.
	ignoredMalformed = "malformed"
)

// Limits in relay_stream_limits_exceeded_total.
const (
	limitPushRate   = "push_rate"
	limitMaxStreams = "max_streams"
	// The bounds on what callers hold before a handler runs
	// (calllimits.go).
	limitClusterCalls        = "cluster_calls"
	limitAnonymousCalls      = "anonymous_calls"
	limitAnonymousConnection = "anonymous_connections"
)

// boundsLogEvery and boundsLogBurst bound the log lines about ignored
// push messages and exceeded limits, over all clusters.
const (
	boundsLogEvery = 10 * time.Second
	boundsLogBurst = 5
)

// agentBounds bound what an authenticated agent can make this replica
// keep or do: push messages per second per cluster over all its streams,
// open streams per cluster, and what it sends that could become a map key
// or a label. An agent's strings become neither unless they name something
// the server already has; what is ignored is counted by reason only and
// logged at a bounded rate.
type agentBounds struct {
	push       *buckets
	maxStreams int
	now        func() time.Time
	// sendTimeout, when not 0, replaces sendTimeout: how long one send
	// of an instruction may wait on an agent that does not read (tests
	// shorten it).
	sendTimeout atomic.Int64

	ignored  *prometheus.CounterVec
	exceeded *prometheus.CounterVec

	logs *limitedLog
	log  logr.Logger
}

func newAgentBounds(reg prometheus.Registerer, cfg *config.Server, now func() time.Time, log logr.Logger) *agentBounds {
	b := &agentBounds{
		push:       newBuckets(cfg.ClusterPushRate, cfg.ClusterPushBurst),
		maxStreams: cfg.MaxStreamsPerCluster,
		now:        now,
		ignored: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_push_messages_ignored_total",
			Help: "Push messages, or their policy names, that the server ignored, by reason (unknown_policy, oversized, malformed: an agent version that is not printable ASCII).",
		}, []string{"reason"}),
		exceeded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_stream_limits_exceeded_total",
			Help: "Streams refused or ended because a cluster exceeded a limit, by limit (push_rate: clusterPushRate; max_streams: maxStreamsPerCluster; cluster_calls: a cluster's calls in flight; anonymous_calls: calls in flight without a client certificate; anonymous_connections: connections without one, closed after the handshake).",
		}, []string{"limit"}),
		logs: newLimitedLog(boundsLogEvery, boundsLogBurst, now),
		log:  log,
	}
	// Every series exists from the start: what agents send never adds one.
	for _, r := range []string{ignoredUnknownPolicy, ignoredOversized} {
		b.ignored.WithLabelValues(r)
	}
	for _, l := range []string{limitPushRate, limitMaxStreams, limitClusterCalls, limitAnonymousCalls, limitAnonymousConnection} {
		b.exceeded.WithLabelValues(l)
	}
	reg.MustRegister(b.ignored, b.exceeded)
	return b
}

// allowPush takes one push message from cluster's bucket. When the bucket
// is empty it returns the ResourceExhausted status that ends the stream:
// the agent reconnects with backoff, and its bucket, kept across streams,
// refills meanwhile.
func (b *agentBounds) allowPush(cluster string) error {
	if b.push.allow(cluster, b.now()) {
		return nil
	}
	b.exceeded.WithLabelValues(limitPushRate).Inc()
	b.logLimited("ended a push or Connect stream: the cluster exceeded its push rate", "cluster", cluster, "limit", "clusterPushRate")
	return status.Errorf(codes.ResourceExhausted,
		"cluster %s sent push messages faster than %g per second with a burst of %d (clusterPushRate, clusterPushBurst): the server ended the stream; reconnect with backoff",
		cluster, float64(b.push.rate), b.push.burst)
}

// refuseStream counts, logs and returns the refusal of another stream for
// cluster, which has open streams on this replica (a Connect stream counts
// two) that this one would take past maxStreams.
func (b *agentBounds) refuseStream(open int, cluster string) error {
	b.exceeded.WithLabelValues(limitMaxStreams).Inc()
	b.logLimited("refused a stream: the cluster has the most streams it may open", "cluster", cluster, "open", open, "limit", "maxStreamsPerCluster")
	return status.Errorf(codes.ResourceExhausted,
		"cluster %s has %d streams open on this server replica (a Connect stream counts as two), and this one would pass the most it may (maxStreamsPerCluster %d): close unused connections to the relay server",
		cluster, open, b.maxStreams)
}

// ignoredWhy are the log lines of the reasons.
var ignoredWhy = map[string]string{
	ignoredUnknownPolicy: "ignored a policy name an agent sent: no RootTrustPolicy of that name applies to its cluster",
	ignoredOversized:     "ignored a push message with a field longer than relay.proto allows",
}

// ignore counts a push message (or its policy name) that cluster sent and
// the server ignored for reason, and logs it unless the log's rate is
// spent; the next line says how many went unlogged.
func (b *agentBounds) ignore(cluster, reason string, keysAndValues ...any) {
	b.ignored.WithLabelValues(reason).Inc()
	b.logLimited(ignoredWhy[reason], append([]any{"cluster", cluster, "reason", reason}, keysAndValues...)...)
}

// logLimited logs msg unless the rate of these lines is spent; the next
// line logged says how many went unlogged. What agents make the server log
// is bounded this way.
func (b *agentBounds) logLimited(msg string, keysAndValues ...any) {
	b.logs.info(b.log, msg, keysAndValues...)
}

// limitedLog bounds the rate of the lines it logs, over all its callers:
// a line beyond the rate is dropped and counted, and the next line logged
// says how many were (unloggedSinceLast). What callers outside the
// server's control make it log goes through one.
type limitedLog struct {
	limiter    *rate.Limiter
	suppressed atomic.Int64
	now        func() time.Time
}

// newLimitedLog logs burst lines at once and one per every after that.
func newLimitedLog(every time.Duration, burst int, now func() time.Time) *limitedLog {
	return &limitedLog{limiter: rate.NewLimiter(rate.Every(every), burst), now: now}
}

// info logs msg to log at Info unless the rate is spent.
func (l *limitedLog) info(log logr.Logger, msg string, keysAndValues ...any) {
	if !l.limiter.AllowN(l.now(), 1) {
		l.suppressed.Add(1)
		return
	}
	log.WithCallDepth(1).Info(msg, append(keysAndValues, "unloggedSinceLast", l.suppressed.Swap(0))...)
}
