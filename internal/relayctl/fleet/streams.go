package fleet

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
)

// Where the connection part of Check reads each cluster's streams.
const (
	// StreamsFromStatus reads KubernetesCluster status, which every
	// relay-server replica writes its own entry of, and the replicas'
	// Leases, which say which entries are live.
	StreamsFromStatus = "status"
	// StreamsFromMetrics reads relay-server's /metrics of every replica
	// (CheckOptions.Metrics) and sums the stream gauges per cluster.
	StreamsFromMetrics = "metrics"
)

// ReplicaStreams is one relay-server replica's share of a cluster's streams.
type ReplicaStreams struct {
	// Replica is the replica's name (its pod's), or the metrics URL that
	// was read.
	Replica string `json:"replica"`
	Push    int    `json:"push"`
	Pull    int    `json:"pull"`
}

// MetricsPage is one relay-server replica's /metrics in Prometheus text
// format, or why it could not be read.
type MetricsPage struct {
	// Replica names where the page comes from: a pod's name when Pod,
	// else the URL that was read.
	Replica string
	Pod     bool
	Data    []byte
	// Err says why the page could not be read; Gone marks a pod that has
	// finished (Succeeded or Failed), which holds no streams any more.
	Err  error
	Gone bool
}

// serverStreams is what the management side learnt of the streams, for
// the per-cluster checks.
type serverStreams struct {
	// live is each relay-server replica whose Lease is live (status); nil
	// when the Leases could not be read, and every entry counts.
	live map[string]bool
	// perCluster is each cluster's streams per replica (metrics); nil when
	// no page could be read.
	perCluster map[string][]ReplicaStreams
	// unread counts the replicas whose metrics could not be read.
	unread int
}

// serverSide reads what the per-cluster stream checks need from the
// management cluster, reporting what is wrong with it there.
func (c *checker) serverSide(ctx context.Context) error {
	switch c.o.StreamsFrom {
	case "":
		return nil
	case StreamsFromStatus:
		return c.replicaLeases(ctx)
	case StreamsFromMetrics:
		if c.o.Metrics == nil {
			return fmt.Errorf("streams from metrics, but no way to read them: set CheckOptions.Metrics")
		}
		c.serverMetrics(ctx)
		return nil
	}
	return fmt.Errorf("unknown source of streams %q: use %q or %q", c.o.StreamsFrom, StreamsFromStatus, StreamsFromMetrics)
}

// clusterStreams fills st's streams and judges them. kc is the cluster's
// registration, nil when it has none.
func (c *checker) clusterStreams(rm Remote, kc *v1alpha1.KubernetesCluster, st *ClusterStatus) {
	switch c.o.StreamsFrom {
	case StreamsFromStatus:
		if kc == nil {
			// Registration is reported already; there is no status to read.
			return
		}
		st.StreamsFrom = StreamsFromStatus
		v := judgeStatus(kc, c.streams.live, c.logsHint(rm))
		st.Replicas, st.Pushing, st.Pulling = v.replicas, v.push, v.pull
		st.ConnectedCondition = v.condition
		if s := kc.Status.ClientCertificate; s != nil {
			st.ServerSeenCertificate = s.DeepCopy()
		}
		st.AgentVersion = kc.Status.AgentVersion
		if kc.Status.LastSeen != nil {
			t := kc.Status.LastSeen.Time
			st.LastSeen = &t
		}
		c.add(st.Name, "relay streams", v.status, "%s", v.detail)
	case StreamsFromMetrics:
		if c.streams.perCluster == nil {
			// No replica's metrics could be read: reported on the
			// management side.
			return
		}
		st.StreamsFrom = StreamsFromMetrics
		for _, r := range c.streams.perCluster[st.Name] {
			st.Pushing += r.Push
			st.Pulling += r.Pull
			st.Replicas = append(st.Replicas, r)
		}
		unread := ""
		if n := c.streams.unread; n > 0 {
			unread = fmt.Sprintf(" (the metrics of %d replica(s) could not be read, see above)", n)
		}
		if st.Pushing == 0 || st.Pulling == 0 {
			c.add(st.Name, "relay streams", Problem, "%d push and %d pull streams on relay-server%s, want at least 1 each: %s for the reason", st.Pushing, st.Pulling, unread, c.logsHint(rm))
		} else {
			c.add(st.Name, "relay streams", OK, "%d push and %d pull streams, on %s%s", st.Pushing, st.Pulling, replicaList(st.Replicas), unread)
		}
	}
}

// logsHint says where the agent's logs of rm are.
func (c *checker) logsHint(rm Remote) string {
	return fmt.Sprintf("check the agent's logs (kubectl --context %s -n %s logs deploy/relay-agent)", rm.Context, c.o.Agent.Namespace)
}

// replicaList names each replica with its streams, as "a (1 push, 1 pull), b (...)".
func replicaList(rs []ReplicaStreams) string {
	parts := make([]string, 0, len(rs))
	for _, r := range rs {
		parts = append(parts, fmt.Sprintf("%s (%d push, %d pull)", r.Replica, r.Push, r.Pull))
	}
	return strings.Join(parts, ", ")
}

// replicaNames is the replicas' names, comma-separated.
func replicaNames(rs []ReplicaStreams) string {
	names := make([]string, 0, len(rs))
	for _, r := range rs {
		names = append(names, r.Replica)
	}
	return strings.Join(slices.Compact(names), ",")
}
