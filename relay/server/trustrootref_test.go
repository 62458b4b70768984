package server

import (
	"context"
	"strings"
	"testing"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	meshv1alpha1 "github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
	"github.com/meshrelay/meshrelay/pkg/config"
)

func TestARootTrustPolicyMayNotTakeItsRootFromARelaySecret(t *testing.T) {
	for _, tc := range []struct {
		name, secret string
		// want is in the Ready condition's message; "" when the root loads.
		want string
	}{
		{"the relay root is refused, saying why and what to use", config.DefaultRootTLSSecret, "names relay-root-tls-secret, which holds the relay root: a RootTrustPolicy may not use a relay secret"},
		{"the CA that signs client certificates is refused", config.DefaultSigningTLSSecret, "which holds the CA that signs client certificates"},
		{"the same root in a secret of its own loads", "mesh-root", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newReconcilerFixture(t, func(p *meshv1alpha1.RootTrustPolicy) {
				p.Spec.Config.MgmtServerCa.Generated = nil
				p.Spec.Config.MgmtServerCa.SecretRef = &meshv1alpha1.SecretReference{Name: tc.secret}
			}, interceptor.Funcs{})
			ctx := context.Background()
			cfg := config.DefaultServer()
			if err := EnsureCA(ctx, f.c, &cfg, logr.Discard()); err != nil {
				t.Fatalf("make the relay secrets: %v", err)
			}
			// mesh-root holds a copy of the relay root: only the name
			// tells it apart.
			var root corev1.Secret
			if err := f.c.Get(ctx, types.NamespacedName{Namespace: cfg.Namespace, Name: cfg.RootTLSSecret.Name}, &root); err != nil {
				t.Fatal(err)
			}
			copied := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: cfg.Namespace, Name: "mesh-root"}, Data: root.Data}
			if err := f.c.Create(ctx, copied); err != nil {
				t.Fatal(err)
			}
			if _, err := f.reconcile(t); err != nil {
				t.Fatalf("Reconcile: %v", err)
			}
			c := meta.FindStatusCondition(f.status(t).Conditions, "Ready")
			loaded := f.r.State.serving("c1") != nil
			switch {
			case tc.want == "" && (!loaded || c == nil || c.Status != metav1.ConditionTrue):
				t.Errorf("a root in a secret of its own: loaded %v, Ready %+v", loaded, c)
			case tc.want == "":
			case loaded:
				t.Errorf("the policy was loaded with the root of %s: Istio intermediates would be signed under it", tc.secret)
			case c == nil || c.Status != metav1.ConditionFalse || c.Reason != "RootUnavailable" || !strings.Contains(c.Message, tc.want) || !strings.Contains(c.Message, "mgmtServerCa.generated"):
				t.Errorf("Ready condition %+v, want False, RootUnavailable, saying %q and naming mgmtServerCa.generated", c, tc.want)
			}
		})
	}
}

// TestRenamedRelaySecretsAreRefusedAsRootsToo: the relay secrets under the
// names a server is configured with are refused as a policy's root, and so
// are the default names; the secret of another namespace is not one of them.
func TestRenamedRelaySecretsAreRefusedAsRootsToo(t *testing.T) {
	cfg := config.DefaultServer()
	cfg.RootTLSSecret.Name = "corp-relay-root"
	cfg.SigningTLSSecret.Name = "corp-relay-signing"
	cfg.TokenSecret.Namespace = "elsewhere"
	cfg.TokenSecret.Name = "corp-token"
	cfg.ClientIssuerSecret = "relay-client-issuers"
	relay := relaySecretsOf(&cfg)
	for name, refused := range map[string]bool{
		"corp-relay-root":             true,
		"corp-relay-signing":          true,
		"relay-client-issuers":        true,
		config.DefaultRootTLSSecret:   true,
		config.DefaultServerTLSSecret: true,
		"corp-token":                  false, // in another namespace
		"mesh-root":                   false,
	} {
		err := checkNotRelaySecret(name, relay)
		if (err != nil) != refused {
			t.Errorf("%s: %v, want refused = %v", name, err, refused)
		}
	}
}
