package agent

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/meshrelay/meshrelay/internal/testenv"
	"github.com/meshrelay/meshrelay/pkg/pki"
)

func TestAgentMetricsServeControllerRuntimesRegistryBesideItsOwn(t *testing.T) {
	w := newWorld(t, nil)
	w.register("cluster-1")
	a, agentURL := w.startAgent("cluster-1", ns)
	w.copySecret("relay-root-tls-secret", ns, "ca.crt")
	w.copySecret("relay-identity-token-secret", ns, "token")
	w.eventually("push and pull are connected", func() error { return w.connected("cluster-1") })
	w.eventually("the agent's provider holds the stored certificate", func() error {
		if a.Provider().Current() == nil {
			return fmt.Errorf("no certificate loaded")
		}
		return nil
	})

	resp, err := http.Get(agentURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics answered %d, want 200 (a metric in both registries makes it 500)", resp.StatusCode)
	}
	got := testenv.ScrapeMetrics(agentURL + "/metrics")
	has := func(prefix string) bool {
		for name := range got {
			if strings.HasPrefix(name, prefix) {
				return true
			}
		}
		return false
	}
	for _, prefix := range []string{
		"relay_agent_build_info{",
		"relay_agent_stream_connected{",
		"leader_election_master_status{",
		"rest_client_requests_total{",
		"go_goroutines",
		"process_cpu_seconds_total",
	} {
		if !has(prefix) {
			t.Errorf("/metrics has no %s sample", prefix)
		}
	}
	if got[`leader_election_master_status{name="relay-agent-cluster-1"}`] != 1 {
		t.Errorf("leader_election_master_status of relay-agent-cluster-1 = %v, want 1: the only replica leads", got[`leader_election_master_status{name="relay-agent-cluster-1"}`])
	}

	t.Run("profiles are not served", func(t *testing.T) {
		resp, err := http.Get(agentURL + "/debug/pprof/")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("/debug/pprof/ answered %d, want 404", resp.StatusCode)
		}
	})

	t.Run("the client certificate's NotBefore and renewal time are exported", func(t *testing.T) {
		leaf := a.Provider().Current().Leaf
		renewAt, err := pki.RenewalTime(leaf, 0.5, 0)
		if err != nil {
			t.Fatal(err)
		}
		for name, want := range map[string]int64{
			"relay_agent_client_certificate_not_before_timestamp_seconds": leaf.NotBefore.Unix(),
			"relay_agent_client_certificate_expiry_timestamp_seconds":     leaf.NotAfter.Unix(),
			"relay_agent_client_certificate_renewal_timestamp_seconds":    renewAt.Unix(),
		} {
			if v := got[name]; v != float64(want) {
				t.Errorf("%s = %v, want %d", name, v, want)
			}
		}
	})
}
