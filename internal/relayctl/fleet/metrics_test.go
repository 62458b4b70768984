package fleet

import (
	"maps"
	"strings"
	"testing"
)

func TestParseConnectedCountsEachCluster(t *testing.T) {
	page := `# TYPE relay_push_clients_connected gauge
relay_push_clients_connected{cluster="c1"} 1
relay_push_clients_connected{cluster="c2"} 2
# TYPE relay_pull_clients_connected gauge
relay_pull_clients_connected{cluster="c1"} 1
# TYPE relay_cluster_registered gauge
relay_cluster_registered{cluster="c3"} 1
`
	got, err := parseConnected([]byte(page))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]ReplicaStreams{"c1": {Push: 1, Pull: 1}, "c2": {Push: 2}}
	if !maps.Equal(got, want) {
		t.Errorf("parseConnected = %v, want %v", got, want)
	}
	if _, err := parseConnected([]byte("relay_push_clients_connected{cluster=\"c1\" 1\n")); err == nil {
		t.Error("a page that does not parse was accepted")
	}
}

// FuzzParseConnected feeds arbitrary text as relay-server's metrics page.
// Property: it never panics, an error comes without a result, and every
// cluster it returns is named in the page.
func FuzzParseConnected(f *testing.F) {
	f.Add("relay_push_clients_connected{cluster=\"c1\"} 1\n")
	f.Add("# TYPE relay_pull_clients_connected gauge\nrelay_pull_clients_connected{cluster=\"x\"} 3\n")
	f.Add("# HELP x y\n# TYPE x counter\nx 1\n")
	f.Fuzz(func(t *testing.T, page string) {
		got, err := parseConnected([]byte(page))
		if err != nil && got != nil {
			t.Fatalf("an error with a result: %v", got)
		}
		// Label values are escaped in the text format.
		escape := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)
		for cluster := range got {
			if !strings.Contains(page, cluster) && !strings.Contains(page, escape.Replace(cluster)) {
				t.Fatalf("cluster %q is not in the page", cluster)
			}
		}
	})
}
