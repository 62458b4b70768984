package server

import (
	"context"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshrelay/meshrelay/internal/testenv"
	meshv1alpha1 "github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
	"github.com/meshrelay/meshrelay/pkg/config"
)

func TestThreeServersStartingAtOnceShareOneSetOfSecrets(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Names: []string{"mgmt"}})
	c := env.Clusters[0]
	if err := c.Client.Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "gloo-mesh"}}); err != nil {
		t.Fatal(err)
	}
	var servers []*Server
	var readyURLs []string
	for range 3 {
		lis, _ := net.Listen("tcp", "127.0.0.1:0")
		mlis, _ := net.Listen("tcp", "127.0.0.1:0")
		srv, err := New(Options{Config: config.DefaultServer(), RESTConfig: c.Config, Log: testr.New(t), Listener: lis, MetricsListener: mlis})
		if err != nil {
			t.Fatal(err)
		}
		servers = append(servers, srv)
		readyURLs = append(readyURLs, "http://"+mlis.Addr().String()+"/readyz")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, len(servers))
	for _, srv := range servers {
		go func() { done <- srv.Run(ctx) }()
	}
	t.Cleanup(func() {
		cancel()
		for range servers {
			if err := <-done; err != nil {
				t.Errorf("server Run: %v", err)
			}
		}
	})
	for _, u := range readyURLs {
		testenv.Eventually(t, "server ready", time.Minute, func() error {
			resp, err := http.Get(u)
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return &statusErr{resp.StatusCode}
			}
			return nil
		})
	}
	var root corev1.Secret
	if err := c.Client.Get(t.Context(), types.NamespacedName{Namespace: "gloo-mesh", Name: "relay-root-tls-secret"}, &root); err != nil {
		t.Fatal(err)
	}
	for i, srv := range servers {
		if got := string(*srv.keys.rootPEM.Load()); got != string(root.Data["ca.crt"]) {
			t.Errorf("server %d trusts another root than the stored one", i)
		}
		if srv.keys.issuer.Load().CA().Cert.Equal(servers[0].keys.issuer.Load().CA().Cert) == false {
			t.Errorf("server %d signs with another intermediate", i)
		}
	}
	var generated corev1.SecretList
	if err := c.Client.List(t.Context(), &generated, client.InNamespace("gloo-mesh"), client.MatchingLabels{meshv1alpha1.GeneratedLabel: "true"}); err != nil {
		t.Fatal(err)
	}
	if len(generated.Items) != 4 {
		t.Errorf("%d generated secrets, want exactly one set of 4 (root, signing, server, token)", len(generated.Items))
	}
}

type statusErr struct{ code int }

func (e *statusErr) Error() string { return http.StatusText(e.code) }
