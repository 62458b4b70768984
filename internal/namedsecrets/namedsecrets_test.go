package namedsecrets_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	crconfig "sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/meshrelay/meshrelay/internal/namedsecrets"
	"github.com/meshrelay/meshrelay/internal/scheme"
	"github.com/meshrelay/meshrelay/internal/testenv"
)

const ns = "relay"

// asServiceAccount returns cfg impersonating ServiceAccount ns/name, as its
// token would authenticate.
func asServiceAccount(cfg *rest.Config, name string) *rest.Config {
	c := rest.CopyConfig(cfg)
	c.Impersonate = rest.ImpersonationConfig{
		UserName: "system:serviceaccount:" + ns + ":" + name,
		Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"},
	}
	return c
}

// TestACacheOfNamedSecretsNeedsOnlyTheirNames runs the cache as a
// ServiceAccount whose Role names two secrets: it reads both, sees each
// change, and never asks for a third, which a namespace-wide cache under
// the same Role cannot do at all.
func TestACacheOfNamedSecretsNeedsOnlyTheirNames(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Names: []string{"named"}})
	admin := env.Clusters[0].Client
	ctx := t.Context()
	mustCreate := func(o client.Object) {
		t.Helper()
		if err := admin.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	secret := func(name, v string) *corev1.Secret {
		return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Data: map[string][]byte{"v": []byte(v)}}
	}
	mustCreate(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
	mustCreate(&rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "reader"},
		Rules: []rbacv1.PolicyRule{{
			APIGroups: []string{""}, Resources: []string{"secrets"},
			ResourceNames: []string{"first", "second"}, Verbs: []string{"get", "list", "watch"},
		}},
	})
	mustCreate(&rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "reader"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "reader"},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Namespace: ns, Name: "reader"}},
	})
	mustCreate(secret("first", "1"))
	mustCreate(secret("other", "not yours"))
	rc := asServiceAccount(env.Clusters[0].Config, "reader")
	s, err := scheme.Scheme()
	if err != nil {
		t.Fatal(err)
	}

	t.Run("a namespace-wide cache under the same Role is forbidden", func(t *testing.T) {
		wide, err := cache.New(rc, cache.Options{Scheme: s, DefaultNamespaces: map[string]cache.Config{ns: {}}})
		if err != nil {
			t.Fatal(err)
		}
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		go func() { _ = wide.Start(cctx) }()
		var sec corev1.Secret
		if err := wide.Get(cctx, types.NamespacedName{Namespace: ns, Name: "first"}, &sec); err == nil {
			t.Fatal("a cache of every secret in the namespace synced under a Role that names two: the Role is wider than this test means")
		}
	})

	mgr, err := ctrl.NewManager(rc, ctrl.Options{
		Scheme: s, Logger: testr.New(t),
		Metrics: metricsserver.Options{BindAddress: "0"}, HealthProbeBindAddress: "0",
		Controller: crconfig.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		t.Fatal(err)
	}
	named, err := namedsecrets.New(rc, namedsecrets.Options{
		Scheme: s, HTTPClient: mgr.GetHTTPClient(), Mapper: mgr.GetRESTMapper(),
		Secrets: []types.NamespacedName{{Namespace: ns, Name: "first"}, {Namespace: ns, Name: "second"}, {Namespace: ns, Name: "first"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := mgr.Add(named); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	events := map[string]int{}
	b := ctrl.NewControllerManagedBy(mgr).Named("named-secrets-test")
	for _, src := range named.Sources() {
		b = b.WatchesRawSource(src)
	}
	err = b.Complete(reconcile.Func(func(_ context.Context, req reconcile.Request) (reconcile.Result, error) {
		mu.Lock()
		events[req.Name]++
		mu.Unlock()
		return reconcile.Result{}, nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	mctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- mgr.Start(mctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("manager: %v", err)
		}
	})
	syncCtx, syncCancel := context.WithTimeout(ctx, 30*time.Second)
	defer syncCancel()
	if !named.WaitForCacheSync(syncCtx) {
		t.Fatal("the named caches did not sync under a Role that names their secrets")
	}
	value := func(name string) (string, error) {
		var sec corev1.Secret
		if err := named.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, &sec); err != nil {
			return "", err
		}
		return string(sec.Data["v"]), nil
	}
	eventually := func(what string, check func() error) {
		t.Helper()
		testenv.Eventually(t, what, 20*time.Second, check)
	}
	seen := func(name string) int {
		mu.Lock()
		defer mu.Unlock()
		return events[name]
	}

	t.Run("a watched secret is read, and its changes arrive", func(t *testing.T) {
		if v, err := value("first"); err != nil || v != "1" {
			t.Fatalf("first = %q, %v", v, err)
		}
		eventually("first's create event", func() error {
			if seen("first") == 0 {
				return fmt.Errorf("no event yet")
			}
			return nil
		})
		before := seen("first")
		upd := secret("first", "2")
		var cur corev1.Secret
		if err := admin.Get(ctx, client.ObjectKeyFromObject(upd), &cur); err != nil {
			t.Fatal(err)
		}
		cur.Data = upd.Data
		if err := admin.Update(ctx, &cur); err != nil {
			t.Fatal(err)
		}
		eventually("first's new value", func() error {
			if v, _ := value("first"); v != "2" || seen("first") <= before {
				return fmt.Errorf("value %q after %d events", v, seen("first"))
			}
			return nil
		})
	})
	t.Run("a watched secret that does not exist yet is NotFound, then appears", func(t *testing.T) {
		if _, err := value("second"); !apierrors.IsNotFound(err) {
			t.Fatalf("second before it exists: %v, want NotFound", err)
		}
		mustCreate(secret("second", "late"))
		eventually("second", func() error {
			if v, err := value("second"); v != "late" || seen("second") == 0 {
				return fmt.Errorf("value %q (%v) after %d events", v, err, seen("second"))
			}
			return nil
		})
	})
	t.Run("a deleted secret is NotFound again", func(t *testing.T) {
		if err := admin.Delete(ctx, secret("second", "")); err != nil {
			t.Fatal(err)
		}
		eventually("second gone", func() error {
			if _, err := value("second"); !apierrors.IsNotFound(err) {
				return fmt.Errorf("second: %v", err)
			}
			return nil
		})
	})
	t.Run("a secret not watched is refused by name, never read", func(t *testing.T) {
		_, err := value("other")
		if err == nil || apierrors.IsNotFound(err) || !strings.Contains(err.Error(), "relay/other is not one of the watched secrets") {
			t.Errorf("other: %v, want a refusal naming it", err)
		}
		if seen("other") != 0 {
			t.Error("an event arrived for a secret not watched")
		}
	})
}
