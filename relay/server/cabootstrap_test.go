package server

import (
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/meshrelay/meshrelay/internal/testenv"
	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/pkg/pki"
	"github.com/meshrelay/meshrelay/pkg/relaysecret"
)

func TestEnsureCA(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Names: []string{"mgmt"}})
	c := env.Clusters[0].Client
	ctx := t.Context()
	log := testr.New(t)
	newNS := func(t *testing.T, name string) config.Server {
		if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}); err != nil {
			t.Fatal(err)
		}
		cfg := config.DefaultServer()
		cfg.Namespace = name
		return cfg
	}
	get := func(ns, name string) (*corev1.Secret, error) {
		var s corev1.Secret
		err := c.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, &s)
		return &s, err
	}

	t.Run("five replicas starting at once agree on one root", func(t *testing.T) {
		cfg := newNS(t, "race")
		var wg sync.WaitGroup
		errs := make([]error, 5)
		for i := range errs {
			wg.Go(func() { errs[i] = EnsureCA(ctx, c, &cfg, log) })
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Errorf("replica %d: %v", i, err)
			}
		}
		root, _ := get("race", "relay-root-tls-secret")
		signing, _ := get("race", "relay-tls-signing-secret")
		server, _ := get("race", "relay-server-tls-secret")
		if string(signing.Data["ca.crt"]) != string(root.Data["ca.crt"]) || string(server.Data["ca.crt"]) != string(root.Data["ca.crt"]) {
			t.Error("signing or server secret chains to a root other than the stored one")
		}
		ca, err := certifiedFromSecret(relaysecret.Signing, signing)
		if err != nil || ca.Root().Subject.CommonName != "meshrelay-root-ca" {
			t.Errorf("signing secret: %v", err)
		}
		rv := root.ResourceVersion
		if err := EnsureCA(ctx, c, &cfg, log); err != nil {
			t.Fatal(err)
		}
		again, _ := get("race", "relay-root-tls-secret")
		if again.ResourceVersion != rv {
			t.Error("a second run rewrote the root secret")
		}
	})

	t.Run("the certificates made have the relay's generated lifetimes and names", func(t *testing.T) {
		cfg := newNS(t, "lifetimes")
		if err := EnsureCA(ctx, c, &cfg, log); err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			kind       relaysecret.Kind
			secret, cn string
			lifetime   time.Duration
		}{
			{relaysecret.Root, "relay-root-tls-secret", "meshrelay-root-ca", relaysecret.RootLifetime},
			{relaysecret.Signing, "relay-tls-signing-secret", "meshrelay-signing-ca", relaysecret.SigningLifetime},
			{relaysecret.Server, "relay-server-tls-secret", cfg.Authority, relaysecret.ServerLifetime},
		} {
			s, err := get("lifetimes", tc.secret)
			if err != nil {
				t.Fatal(err)
			}
			ca, err := certifiedFromSecret(tc.kind, s)
			if err != nil {
				t.Fatal(err)
			}
			if got := ca.Cert.NotAfter.Sub(ca.Cert.NotBefore) - pki.DefaultBackdate; got != tc.lifetime || ca.Cert.Subject.CommonName != tc.cn {
				t.Errorf("%s: CN %q lifetime %s, want CN %q lifetime %s", tc.secret, ca.Cert.Subject.CommonName, got, tc.cn, tc.lifetime)
			}
		}
	})

	t.Run("an existing secret is never overwritten", func(t *testing.T) {
		cfg := newNS(t, "byo")
		token := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "byo", Name: "relay-identity-token-secret"}, Data: map[string][]byte{"token": []byte("mine")}}
		if err := c.Create(ctx, token); err != nil {
			t.Fatal(err)
		}
		if err := EnsureCA(ctx, c, &cfg, log); err != nil {
			t.Fatal(err)
		}
		got, _ := get("byo", "relay-identity-token-secret")
		if string(got.Data["token"]) != "mine" {
			t.Errorf("token overwritten with %q", got.Data["token"])
		}
	})

	t.Run("disabled generation creates nothing it should not", func(t *testing.T) {
		cfg := newNS(t, "disabled")
		cfg.DisableCaCertGeneration = true
		cfg.DisableTokenGeneration = true
		if err := EnsureCA(ctx, c, &cfg, log); err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{"relay-root-tls-secret", "relay-tls-signing-secret", "relay-server-tls-secret", "relay-identity-token-secret"} {
			if _, err := get("disabled", name); !apierrors.IsNotFound(err) {
				t.Errorf("secret %s: %v, want NotFound", name, err)
			}
		}
	})

	t.Run("a root without its key cannot make an intermediate and says so", func(t *testing.T) {
		cfg := newNS(t, "rootonly")
		full := newNS(t, "rootsource")
		if err := EnsureCA(ctx, c, &full, log); err != nil {
			t.Fatal(err)
		}
		src, _ := get("rootsource", "relay-root-tls-secret")
		root := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "rootonly", Name: "relay-root-tls-secret"}, Data: map[string][]byte{"ca.crt": src.Data["ca.crt"]}}
		if err := c.Create(ctx, root); err != nil {
			t.Fatal(err)
		}
		err := EnsureCA(ctx, c, &cfg, log)
		if err == nil || err.Error() != "secret rootonly/relay-root-tls-secret has no tls.key to sign an intermediate with: provide rootonly/relay-tls-signing-secret, or add the root key" {
			t.Errorf("EnsureCA = %v", err)
		}
	})
}
