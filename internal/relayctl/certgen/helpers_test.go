package certgen

import (
	"bytes"
	"crypto/x509"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/meshrelay/meshrelay/pkg/pki"
)

// t0 is the fixed time of issue of the tests.
var t0 = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

const authority = "gloo-mesh-mgmt-server.gloo-mesh"

func generate(t testing.TB, arch Architecture, clusters ...string) []ClusterSecrets {
	t.Helper()
	sets, err := Generate(Options{Architecture: arch, Clusters: clusters, Now: t0})
	if err != nil {
		t.Fatalf("Generate(%s, %v): %v", arch, clusters, err)
	}
	return sets
}

// secretOf returns the secret name of cluster in sets.
func secretOf(t testing.TB, sets []ClusterSecrets, cluster, name string) *corev1.Secret {
	t.Helper()
	for _, set := range sets {
		if set.Cluster != cluster {
			continue
		}
		for i := range set.Secrets {
			if set.Secrets[i].Name == name {
				return &set.Secrets[i]
			}
		}
	}
	t.Fatalf("cluster %s has no secret %s", cluster, name)
	return nil
}

// certsOf decodes data[key] of s with pkg/pki.
func certsOf(t testing.TB, s *corev1.Secret, key string) []*x509.Certificate {
	t.Helper()
	certs, err := pki.DecodeCertificates(s.Data[key])
	if err != nil {
		t.Fatalf("%s data[%s]: %v", s.Name, key, err)
	}
	return certs
}

// parseStream splits a multi-document YAML stream and decodes each
// document as a Secret, returning the "# cluster:" comment of each.
func parseStream(t testing.TB, stream []byte) (clusters []string, secrets []corev1.Secret) {
	t.Helper()
	for i, doc := range bytes.Split(stream, []byte("\n---\n")) {
		first, _, _ := bytes.Cut(doc, []byte("\n"))
		cluster, ok := strings.CutPrefix(string(first), "# cluster: ")
		if !ok {
			t.Fatalf("document %d does not start with a cluster comment: %q", i+1, first)
		}
		var s corev1.Secret
		if err := yaml.UnmarshalStrict(doc, &s); err != nil {
			t.Fatalf("document %d does not parse as a Secret: %v", i+1, err)
		}
		clusters, secrets = append(clusters, cluster), append(secrets, s)
	}
	return clusters, secrets
}

// wantErr fails unless err is one line containing every part of want.
func wantErr(t testing.TB, err error, want ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want one containing %q", want)
	}
	if strings.Contains(err.Error(), "\n") {
		t.Errorf("error is not one line: %q", err)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not contain %q", err, w)
		}
	}
}
