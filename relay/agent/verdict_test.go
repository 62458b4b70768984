package agent

import (
	"crypto/x509"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshrelay/meshrelay/internal/relaysecrettest"
	"github.com/meshrelay/meshrelay/pkg/relaysecret"
)

// TestAgentGivesTheCatalogueVerdicts loads every client secret of the
// shared table as relay-agent does: the usable ones are loaded for TLS, the
// others refused. The webhook, relay-server and relayctl judge the same
// table.
func TestAgentGivesTheCatalogueVerdicts(t *testing.T) {
	f := relaysecrettest.New(t)
	n := 0
	for _, c := range f.Cases(t) {
		if c.Kind != relaysecret.Client {
			continue
		}
		n++
		t.Run(c.Name, func(t *testing.T) {
			sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "gloo-mesh", Name: "relay-client-tls-secret"}, Data: c.Data}
			cert, err := clientCertificate(sec, []*x509.Certificate{f.Root.Cert}, relaysecrettest.Cluster, f.Now)
			if loaded := err == nil && cert != nil; loaded != c.OK {
				t.Errorf("loaded = %v, want %v (error: %v)", loaded, c.OK, err)
			}
		})
	}
	if n < 3 {
		t.Fatalf("the table has %d client secrets, want good and bad ones", n)
	}
}
