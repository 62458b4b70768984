package fleet

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// serverMetrics reads every replica's metrics and sums the streams per
// cluster, reporting each replica that could not be read.
func (c *checker) serverMetrics(ctx context.Context) {
	const side, check = "management", "relay-server metrics"
	ns := c.o.Server.Namespace
	running := fmt.Sprintf("is relay-server running? (kubectl -n %s get deploy gloo-mesh-mgmt-server)", ns)
	pages, err := c.o.Metrics(ctx)
	if err != nil {
		c.add(side, check, Problem, "%v: %s", err, running)
		return
	}
	var read int
	perCluster := map[string][]ReplicaStreams{}
	for _, p := range pages {
		if p.Err == nil {
			counts, err := parseConnected(p.Data)
			if err == nil {
				read++
				for cluster, r := range counts {
					r.Replica = p.Replica
					perCluster[cluster] = append(perCluster[cluster], r)
				}
				continue
			}
			p.Err = err
		}
		switch {
		case p.Gone:
			c.add(side, check, Warning, "pod %s/%s: %v; it holds no streams: delete it (kubectl -n %s delete pod %s)", ns, p.Replica, p.Err, ns, p.Replica)
		case p.Pod:
			c.add(side, check, Problem, "pod %s/%s: %v: is it running and ready (kubectl -n %s describe pod %s; kubectl -n %s logs %s), and does a NetworkPolicy let the API server reach its metrics port? (kubectl -n %s get networkpolicy)", ns, p.Replica, p.Err, ns, p.Replica, ns, p.Replica, ns)
			c.streams.unread++
		default:
			c.add(side, check, Problem, "%s: %v: %s", p.Replica, p.Err, running)
			c.streams.unread++
		}
	}
	if read == 0 {
		return
	}
	for cluster, rs := range perCluster {
		rs = slices.DeleteFunc(rs, func(r ReplicaStreams) bool { return r.Push == 0 && r.Pull == 0 })
		slices.SortFunc(rs, func(a, b ReplicaStreams) int { return strings.Compare(a.Replica, b.Replica) })
		perCluster[cluster] = rs
	}
	c.streams.perCluster = perCluster
	c.add(side, check, OK, "read from %d of %d replica(s)", read, len(pages))
}

// parseConnected reads relay_{push,pull}_clients_connected per cluster
// from one replica's metrics page.
func parseConnected(page []byte) (map[string]ReplicaStreams, error) {
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(bytes.NewReader(page))
	if err != nil {
		return nil, fmt.Errorf("relay-server metrics do not parse: %w", err)
	}
	out := map[string]ReplicaStreams{}
	for _, kind := range []string{"push", "pull"} {
		f := families["relay_"+kind+"_clients_connected"]
		if f == nil {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() != "cluster" {
					continue
				}
				r := out[l.GetValue()]
				n := int(m.GetGauge().GetValue())
				if kind == "push" {
					r.Push += n
				} else {
					r.Pull += n
				}
				out[l.GetValue()] = r
			}
		}
	}
	return out, nil
}
