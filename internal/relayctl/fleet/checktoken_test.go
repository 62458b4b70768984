package fleet

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/meshrelay/meshrelay/pkg/config"
)

func TestCheckWarnsWhileTheSharedTokenExistsAndReportsAnExpiredUnusedToken(t *testing.T) {
	fx := newRegistrationFixture(t, 24*time.Hour)
	mgmt, remote, srv, ag, wh := fx.mgmt, fx.remote, fx.srv, fx.ag, config.DefaultWebhook()
	ctx := t.Context()
	shared := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: srv.Namespace, Name: srv.TokenSecret.Name}, Data: map[string][]byte{"token": []byte(strings.Repeat("s", 43))}}
	if err := mgmt.Create(ctx, shared); err != nil {
		t.Fatal(err)
	}
	issued := time.Now().UTC().Truncate(time.Second)
	if _, err := Register(ctx, mgmt, remote, RegisterOptions{Name: "cluster-1", Server: &srv, Agent: &ag, Now: issued}); err != nil {
		t.Fatal(err)
	}
	finding := func(t *testing.T, at time.Time, cluster, check string) Finding {
		t.Helper()
		r, err := Check(ctx, CheckOptions{Server: &srv, Agent: &ag, Webhook: &wh, Mgmt: mgmt, Now: at,
			Remotes: []Remote{{Context: "cluster-1", Name: "cluster-1", Client: remote}}})
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range r.Findings {
			if f.Cluster == cluster && f.Check == check {
				return f
			}
		}
		t.Fatalf("no finding %s: %s in %+v", cluster, check, r.Findings)
		return Finding{}
	}
	want := func(t *testing.T, f Finding, st Status, parts ...string) {
		t.Helper()
		for _, p := range parts {
			if f.Status != st || !strings.Contains(f.Detail, p) {
				t.Errorf("finding %s: %s = %s %q, want %s containing %q", f.Cluster, f.Check, f.Status, f.Detail, st, p)
			}
		}
	}
	sharedCheck := "secret " + srv.Namespace + "/" + srv.TokenSecret.Name

	t.Run("the shared token is a warning that says how to remove it", func(t *testing.T) {
		want(t, finding(t, issued, "management", sharedCheck), Warning,
			"whoever holds it can bootstrap any registered cluster that was never bootstrapped", "--disable-shared-token", "kubectl -n gloo-mesh delete secret relay-identity-token-secret")
	})
	t.Run("an unused token is fine until it expires", func(t *testing.T) {
		want(t, finding(t, issued.Add(time.Minute), "cluster-1", "bootstrap token"), OK, "unused, single use, expires at "+issued.Add(time.Hour).Format(time.RFC3339))
	})
	t.Run("an expired unused token is a problem while the agent has no certificate, with the fix", func(t *testing.T) {
		want(t, finding(t, issued.Add(2*time.Hour), "cluster-1", "bootstrap token"), Problem,
			"expired unused at "+issued.Add(time.Hour).Format(time.RFC3339), "relayctl register cluster-1")
	})
	t.Run("a workload token that is not the one issued is a problem", func(t *testing.T) {
		var s corev1.Secret
		if err := remote.Get(ctx, types.NamespacedName{Namespace: ag.Namespace, Name: ag.TokenSecret.Name}, &s); err != nil {
			t.Fatal(err)
		}
		s.Data["token"] = []byte("another")
		if err := remote.Update(ctx, &s); err != nil {
			t.Fatal(err)
		}
		want(t, finding(t, issued.Add(time.Minute), "cluster-1", "bootstrap token"), Problem, "does not hold the token issued for cluster-1", "relayctl register cluster-1")
	})
	t.Run("without the shared token there is nothing to warn about", func(t *testing.T) {
		if err := mgmt.Delete(ctx, shared); err != nil {
			t.Fatal(err)
		}
		want(t, finding(t, issued, "management", sharedCheck), OK, "no shared identity token")
	})
}
