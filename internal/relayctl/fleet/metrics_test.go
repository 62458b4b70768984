package fleet

import (
	"context"
	"strings"
	"testing"
)

func pages(p ...string) func(context.Context) ([][]byte, error) {
	return func(context.Context) ([][]byte, error) {
		var out [][]byte
		for _, s := range p {
			out = append(out, []byte(s))
		}
		return out, nil
	}
}

func TestReadConnectedSumsReplicasPerCluster(t *testing.T) {
	a := `# TYPE relay_push_clients_connected gauge
relay_push_clients_connected{cluster="c1"} 1
relay_push_clients_connected{cluster="c2"} 0
# TYPE relay_pull_clients_connected gauge
relay_pull_clients_connected{cluster="c1"} 1
`
	b := `# TYPE relay_push_clients_connected gauge
relay_push_clients_connected{cluster="c2"} 2
`
	got, err := readConnected(t.Context(), pages(a, b))
	if err != nil {
		t.Fatal(err)
	}
	if got["c1"]["push"] != 1 || got["c1"]["pull"] != 1 || got["c2"]["push"] != 2 || got["c2"]["pull"] != 0 {
		t.Errorf("connected = %v", got)
	}
	if _, err := readConnected(t.Context(), pages("relay_push_clients_connected{cluster=\"c1\" 1\n")); err == nil {
		t.Error("a page that does not parse was accepted")
	}
}

// FuzzReadConnected feeds arbitrary text as relay-server's metrics page.
// Property: it never panics, an error comes without a result, and every
// cluster it returns is named in the page.
func FuzzReadConnected(f *testing.F) {
	f.Add("relay_push_clients_connected{cluster=\"c1\"} 1\n")
	f.Add("# TYPE relay_pull_clients_connected gauge\nrelay_pull_clients_connected{cluster=\"x\"} 3\n")
	f.Add("# HELP x y\n# TYPE x counter\nx 1\n")
	f.Fuzz(func(t *testing.T, page string) {
		got, err := readConnected(t.Context(), pages(page))
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
