package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/meshrelay/meshrelay/internal/testenv"
	"github.com/meshrelay/meshrelay/pkg/config"
)

// TestBinariesLogJSONAndServeOneRegistryEach runs relay-server, relay-agent
// and relay-webhook as processes with --log-json. Each /metrics serves
// controller-runtime's metrics beside the binary's own and its build info;
// relay-server counts the agent's Bootstrap by method and code and times
// its signing; and every line each binary printed, start to stop, is JSON,
// controller-runtime's own included.
func TestBinariesLogJSONAndServeOneRegistryEach(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	mesh, env := startMesh(ctx, t, testenv.Options{Names: []string{"mgmt", "cluster-1"}})
	for _, c := range env.Clusters {
		env.MustKubectl(ctx, t, "", "--context", c.Name, "create", "namespace", config.DefaultNamespace)
	}
	env.MustKubectl(ctx, t, "", "--context", "cluster-1", "create", "namespace", config.DefaultWebhookNamespace)

	server, err := mesh.StartServer(ctx, "mgmt", "--log-json")
	if err != nil {
		t.Fatal(err)
	}
	if _, stderr, code := mesh.Relayctl(ctx, "register", "cluster-1", "--mgmt-context", "mgmt", "--remote-context", "cluster-1"); code != 0 {
		t.Fatalf("relayctl register cluster-1: exit %d: %s", code, stderr)
	}
	agent, agentMetrics, err := mesh.StartAgent("cluster-1", "cluster-1", "--log-json")
	if err != nil {
		t.Fatal(err)
	}
	webhookAddr, _ := testenv.FreeAddr()
	webhookMetrics, _ := testenv.FreeAddr()
	webhook, err := mesh.Start("relay-webhook", "relay-webhook-cluster-1", "--kubeconfig", env.Kubeconfig, "--context", "cluster-1",
		"--listen-address", webhookAddr, "--metrics-address", webhookMetrics, "--serving-ip", "127.0.0.1",
		"--cluster", "cluster-1", "--server-address", mesh.ServerAddr, "--log-json")
	if err != nil {
		t.Fatal(err)
	}
	// Its metrics are served before it is ready, which it is not until
	// its webhook configurations exist: this test installs none.
	testenv.Eventually(t, "relay-webhook serves /metrics", time.Minute, func() error {
		if testenv.ScrapeMetric("http://"+webhookMetrics+"/metrics", "relay_webhook_build_info") == "" {
			return fmt.Errorf("no relay_webhook_build_info at %s", webhookMetrics)
		}
		return nil
	})
	serverURL := "http://" + mesh.ServerMetrics + "/metrics"
	testenv.Eventually(t, "cluster-1's agent is connected", time.Minute, func() error {
		if v := testenv.ScrapeMetrics(serverURL)[`relay_push_clients_connected{cluster="cluster-1"}`]; v != 1 {
			return fmt.Errorf("relay_push_clients_connected = %v", v)
		}
		return nil
	})

	// The e2e build stamps no commit (hack/build-binaries.sh does), and Go
	// records none with -buildvcs=false: the label then says "unknown".
	revision := regexp.MustCompile(`goversion="go[^"]+",revision="[^"]+",version="[^"]+"`)
	for _, tc := range []struct {
		binary, url string
		want        map[string]float64
		present     []string
	}{
		{"relay-server", serverURL, map[string]float64{
			`grpc_server_handled_total{grpc_code="OK",grpc_method="Bootstrap",grpc_service="meshrelay.relay.v1.Relay",grpc_type="unary"}`: 1,
			`grpc_server_started_total{grpc_method="Connect",grpc_service="meshrelay.relay.v1.Relay",grpc_type="bidi_stream"}`:            1,
			`grpc_server_started_total{grpc_method="Pull",grpc_service="meshrelay.relay.v1.Relay",grpc_type="server_stream"}`:             0,
			`relay_certificate_signing_duration_seconds_count{call="bootstrap"}`:                                                          1,
			`leader_election_master_status{name="relay-server"}`:                                                                          1,
		}, []string{"relay_server_build_info{", "workqueue_adds_total{", "rest_client_requests_total{", "go_goroutines"}},
		{"relay-agent", "http://" + agentMetrics + "/metrics", map[string]float64{
			`leader_election_master_status{name="relay-agent-cluster-1"}`: 1,
			`relay_agent_stream_connected{stream="push"}`:                 1,
		}, []string{"relay_agent_build_info{", "relay_agent_client_certificate_renewal_timestamp_seconds", "rest_client_requests_total{", "process_cpu_seconds_total"}},
		{"relay-webhook", "http://" + webhookMetrics + "/metrics", nil,
			[]string{"relay_webhook_build_info{", "rest_client_requests_total{", "go_goroutines"}},
	} {
		t.Run(tc.binary+" serves one registry with its build info", func(t *testing.T) {
			resp, err := http.Get(tc.url)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("/metrics answered %d, want 200 (a metric in both registries makes it 500)", resp.StatusCode)
			}
			got := testenv.ScrapeMetrics(tc.url)
			for series, want := range tc.want {
				if v, ok := got[series]; !ok || v != want {
					t.Errorf("%s = %v (present %v), want %v", series, v, ok, want)
				}
			}
			for _, prefix := range tc.present {
				var line string
				for name := range got {
					if strings.HasPrefix(name, prefix) {
						line = name
					}
				}
				switch {
				case line == "":
					t.Errorf("no %s sample", prefix)
				case strings.Contains(prefix, "build_info") && !revision.MatchString(line):
					t.Errorf("%s does not name its Go version, commit and version", line)
				}
			}
		})
	}

	t.Run("every line each binary printed is JSON", func(t *testing.T) {
		for _, p := range []*testenv.Process{agent, webhook, server} {
			if err := p.Stop(); err != nil {
				t.Errorf("%s: %v", p.Name, err)
			}
			f, err := os.Open(p.Log)
			if err != nil {
				t.Fatal(err)
			}
			n, loggers := 0, map[string]bool{}
			sc := bufio.NewScanner(f)
			sc.Buffer(make([]byte, 1<<20), 1<<20)
			for sc.Scan() {
				n++
				var entry struct {
					Level, Msg, Logger string
				}
				if err := json.Unmarshal(sc.Bytes(), &entry); err != nil || entry.Level == "" || entry.Msg == "" {
					t.Errorf("%s printed a line that is not a JSON log entry: %s", p.Name, sc.Text())
				}
				loggers[entry.Logger] = true
			}
			f.Close()
			if n == 0 {
				t.Errorf("%s printed nothing", p.Name)
			}
			if p == webhook && !loggers["controller-runtime/webhook"] {
				// The webhook server logs through controller-runtime's
				// global logger: set, or its lines are dropped.
				t.Errorf("%s printed no line of controller-runtime's webhook server (loggers %v)", p.Name, loggers)
			}
			t.Logf("%s: %d JSON lines from %d loggers", p.Name, n, len(loggers))
		}
	})
}
