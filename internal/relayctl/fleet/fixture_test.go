package fleet

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshrelay/meshrelay/internal/testenv"
	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/pkg/pki"
)

// registrationFixture is a management cluster holding a relay root in
// relay-root-tls-secret, and a workload cluster, cluster-1, to register.
type registrationFixture struct {
	mgmt, remote client.Client
	srv          config.Server
	ag           config.Agent
	root         *pki.Certified
}

// newRegistrationFixture starts both clusters and stores a root living ttl.
func newRegistrationFixture(t *testing.T, ttl time.Duration) *registrationFixture {
	t.Helper()
	env := testenv.Start(t, testenv.Options{Names: []string{"mgmt", "cluster-1"}})
	f := &registrationFixture{mgmt: env.Cluster("mgmt").Client, remote: env.Cluster("cluster-1").Client, srv: config.DefaultServer(), ag: config.DefaultAgent()}
	ctx := t.Context()
	if err := f.mgmt.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: f.srv.Namespace}}); err != nil {
		t.Fatal(err)
	}
	var err error
	if f.root, err = pki.NewRootCA(pki.Options{CommonName: "root", TTL: ttl}); err != nil {
		t.Fatal(err)
	}
	rootSecret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: f.srv.Namespace, Name: f.srv.RootTLSSecret.Name}, Data: map[string][]byte{"ca.crt": f.root.CertPEM()}}
	if err := f.mgmt.Create(ctx, rootSecret); err != nil {
		t.Fatal(err)
	}
	return f
}
