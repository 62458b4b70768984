package fleet_test

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshrelay/meshrelay/internal/relayctl/fleet"
	"github.com/meshrelay/meshrelay/internal/relaysecrettest"
	"github.com/meshrelay/meshrelay/internal/testenv"
	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/pkg/relaysecret"
)

// TestCheckGivesTheCatalogueVerdicts stores each secret of the shared table
// on a local cluster and runs relayctl check: a usable secret has no
// problem reported against it, any other has one. The webhook,
// relay-server and relay-agent judge the same table.
func TestCheckGivesTheCatalogueVerdicts(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Names: []string{"mgmt"}})
	c := env.Clusters[0].Client
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	f := relaysecrettest.New(t)

	srv, ag, wh := config.DefaultServer(), config.DefaultAgent(), config.DefaultWebhook()
	srv.Authority = relaysecrettest.Authority
	ag.Cluster = relaysecrettest.Cluster
	names := map[relaysecret.Kind]string{
		relaysecret.Root: srv.RootTLSSecret.Name, relaysecret.Signing: srv.SigningTLSSecret.Name, relaysecret.Server: srv.TLSSecret.Name,
		relaysecret.Client: ag.ClientTLSSecret.Name, relaysecret.Token: srv.TokenSecret.Name,
	}
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: srv.Namespace}}); err != nil {
		t.Fatal(err)
	}
	put := func(name string, data map[string][]byte) {
		t.Helper()
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: srv.Namespace, Name: name}, Data: data}
		if err := c.Delete(ctx, s); err != nil && !apierrors.IsNotFound(err) {
			t.Fatal(err)
		}
		if err := c.Create(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	put(names[relaysecret.Root], f.RootData)
	for _, tc := range f.Cases(t) {
		name, ok := names[tc.Kind]
		if !ok {
			continue
		}
		t.Run(tc.Name, func(t *testing.T) {
			put(name, tc.Data)
			r, err := fleet.Check(ctx, fleet.CheckOptions{
				Server: &srv, Agent: &ag, Webhook: &wh, Mgmt: c, Now: f.Now,
				Remotes: []fleet.Remote{{Context: "mgmt", Name: relaysecrettest.Cluster, Client: c}},
			})
			if err != nil {
				t.Fatal(err)
			}
			var problems []string
			for _, p := range r.Findings {
				if p.Check == "secret "+srv.Namespace+"/"+name && p.Status == fleet.Problem {
					problems = append(problems, p.Detail)
				}
			}
			if usable := len(problems) == 0; usable != tc.OK {
				t.Errorf("usable = %v, want %v; problems: %v", usable, tc.OK, problems)
			}
		})
	}
}
