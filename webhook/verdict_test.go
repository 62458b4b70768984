package webhook_test

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/meshrelay/meshrelay/internal/relaysecrettest"
	"github.com/meshrelay/meshrelay/internal/scheme"
	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/pkg/relaysecret"
	"github.com/meshrelay/meshrelay/webhook"
)

// TestWebhookGivesTheCatalogueVerdicts judges the shared table of good and
// bad relay secrets as the webhook does (the offline validator runs the
// admission handler's checks): a usable secret is admitted, any other
// denied. relay-server, relay-agent and relayctl judge the same table.
func TestWebhookGivesTheCatalogueVerdicts(t *testing.T) {
	f := relaysecrettest.New(t)
	s, err := scheme.Scheme()
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.DefaultWebhook()
	cfg.Cluster, cfg.Authority = relaysecrettest.Cluster, relaysecrettest.Authority
	names := relaysecret.WebhookNames(&cfg)
	root := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: names.Root.Namespace, Name: names.Root.Name}, Data: f.RootData}
	v := webhook.NewValidator(&cfg, fake.NewClientBuilder().WithScheme(s).WithObjects(root).Build(), clocktesting.NewFakePassiveClock(f.Now))
	for _, c := range f.Cases(t) {
		t.Run(c.Name, func(t *testing.T) {
			key := names.Of(c.Kind)
			sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name}, Data: c.Data}
			if !v.Checks(sec) {
				t.Fatalf("the webhook does not check %s", key)
			}
			denials, _, err := v.Secret(context.Background(), sec)
			if err != nil {
				t.Fatal(err)
			}
			if admitted := len(denials) == 0; admitted != c.OK {
				t.Errorf("admitted = %v, want %v; denials: %v", admitted, c.OK, denials)
			}
		})
	}
}
