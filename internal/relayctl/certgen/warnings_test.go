package certgen

import (
	"strings"
	"testing"
	"time"
)

func TestWarningsSayWhatEachArchitecturesWorkloadCAKeyAllows(t *testing.T) {
	for _, c := range []struct {
		arch Architecture
		want []string
	}{
		{Single, []string{"istio-system/cacerts on every workload cluster (cluster-1, cluster-2)", "the CA that issues relay client certificates", "issuer pinning cannot refuse them"}},
		{TwoIntermediates, []string{"istio-system/cacerts on every workload cluster (cluster-1, cluster-2)", "a CA under the relay root", "relay-server refuses the client certificates it issues", "pins the root only"}},
		{SeparateRoots, nil},
	} {
		t.Run(string(c.arch), func(t *testing.T) {
			sets, err := Generate(Options{Architecture: c.arch, Clusters: []string{"cluster-1", "cluster-2"}})
			if err != nil {
				t.Fatal(err)
			}
			got, err := Warnings(sets, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			if len(c.want) == 0 {
				if len(got) != 0 {
					t.Errorf("warnings %q, want none", got)
				}
				return
			}
			if len(got) != 1 {
				t.Fatalf("warnings %q, want one for the mesh CA every workload cluster holds", got)
			}
			for _, w := range c.want {
				if !strings.Contains(got[0], w) {
					t.Errorf("warning %q does not say %q", got[0], w)
				}
			}
		})
	}
}
