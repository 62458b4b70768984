package certgen

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
)

func TestStreamParsesBackIntoTheSameSecretsUnderTheirClusters(t *testing.T) {
	for _, arch := range Architectures {
		t.Run(string(arch), func(t *testing.T) {
			sets := generate(t, arch, "cluster-1", "cluster-2")
			var buf bytes.Buffer
			if err := WriteStream(&buf, sets); err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(buf.String(), "# cluster: management\n") {
				t.Errorf("stream does not start with the management cluster's first secret:\n%.80s", buf.String())
			}
			clusters, secrets := parseStream(t, buf.Bytes())
			i := 0
			for _, set := range sets {
				for _, want := range set.Secrets {
					if i >= len(secrets) {
						t.Fatalf("stream has %d secrets, want more", len(secrets))
					}
					if clusters[i] != set.Cluster {
						t.Errorf("document %d (%s) is marked for cluster %q, want %q", i+1, want.Name, clusters[i], set.Cluster)
					}
					if !reflect.DeepEqual(secrets[i], want) {
						t.Errorf("document %d does not parse back into secret %s/%s of cluster %s", i+1, want.Namespace, want.Name, set.Cluster)
					}
					i++
				}
			}
			if i != len(secrets) {
				t.Errorf("stream has %d secrets, want %d", len(secrets), i)
			}
		})
	}
}
