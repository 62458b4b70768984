package selfcert

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshrelay/meshrelay/internal/testenv"
	meshv1alpha1 "github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
	"github.com/meshrelay/meshrelay/pkg/pki"
	"github.com/meshrelay/meshrelay/pkg/relaysecret"
)

type clock struct{ now atomic.Pointer[time.Time] }

func (c *clock) Now() time.Time      { return *c.now.Load() }
func (c *clock) set(t time.Time)     { c.now.Store(&t) }
func (c *clock) add(d time.Duration) { c.set(c.Now().Add(d)) }

type fixture struct {
	t      *testing.T
	ctx    context.Context
	client client.Client
	clock  *clock
}

func newFixture(t *testing.T) *fixture {
	env := testenv.Start(t, testenv.Options{Names: []string{"webhook"}})
	f := &fixture{t: t, ctx: t.Context(), client: env.Clusters[0].Client, clock: &clock{}}
	f.clock.set(time.Now())
	if err := f.client.Create(f.ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "meshrelay-system"}}); err != nil {
		t.Fatal(err)
	}
	hook := func(name string) admissionregistrationv1.WebhookClientConfig {
		return admissionregistrationv1.WebhookClientConfig{URL: ptr.To("https://127.0.0.1:1/" + name)}
	}
	none := admissionregistrationv1.SideEffectClassNone
	for _, obj := range []client.Object{
		&admissionregistrationv1.ValidatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: "v"}, Webhooks: []admissionregistrationv1.ValidatingWebhook{
			{Name: "a.meshrelay.dev", ClientConfig: hook("a"), SideEffects: &none, AdmissionReviewVersions: []string{"v1"}},
			{Name: "b.meshrelay.dev", ClientConfig: hook("b"), SideEffects: &none, AdmissionReviewVersions: []string{"v1"}},
		}},
		&admissionregistrationv1.MutatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: "m"}, Webhooks: []admissionregistrationv1.MutatingWebhook{
			{Name: "c.meshrelay.dev", ClientConfig: hook("c"), SideEffects: &none, AdmissionReviewVersions: []string{"v1"}},
		}},
	} {
		if err := f.client.Create(f.ctx, obj); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

func (f *fixture) manager() *Manager {
	m, err := New(Options{
		Client: f.client, Namespace: "meshrelay-system", SecretName: "relay-webhook-tls", ServiceName: "relay-webhook",
		ValidatingConfiguration: "v", MutatingConfiguration: "m",
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, CALifetime: 30 * 24 * time.Hour, ServingLifetime: 9 * 24 * time.Hour,
		Now: f.clock.Now, Log: logr.Discard(),
	})
	if err != nil {
		f.t.Fatal(err)
	}
	return m
}

// bundles returns the caBundle of every webhook of both configurations.
func (f *fixture) bundles() [][]byte {
	var v admissionregistrationv1.ValidatingWebhookConfiguration
	var m admissionregistrationv1.MutatingWebhookConfiguration
	if err := f.client.Get(f.ctx, types.NamespacedName{Name: "v"}, &v); err != nil {
		f.t.Fatal(err)
	}
	if err := f.client.Get(f.ctx, types.NamespacedName{Name: "m"}, &m); err != nil {
		f.t.Fatal(err)
	}
	return [][]byte{v.Webhooks[0].ClientConfig.CABundle, v.Webhooks[1].ClientConfig.CABundle, m.Webhooks[0].ClientConfig.CABundle}
}

func (f *fixture) wantPublished(m *Manager) {
	f.t.Helper()
	for i, b := range f.bundles() {
		if !bytes.Equal(b, m.CABundle()) {
			f.t.Errorf("webhook %d has caBundle of %d bytes, not the manager's bundle", i, len(b))
		}
	}
}

func serving(t *testing.T, m *Manager) *x509.Certificate {
	t.Helper()
	c, err := m.GetCertificate(nil)
	if err != nil {
		t.Fatal(err)
	}
	return c.Leaf
}

func TestSelfManagedServingCertificate(t *testing.T) {
	f := newFixture(t)
	a, b := f.manager(), f.manager()

	t.Run("two replicas starting at once make one secret and serve the same certificate", func(t *testing.T) {
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i, m := range []*Manager{a, b} {
			wg.Go(func() { errs[i] = m.Ensure(f.ctx) })
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		if !serving(t, a).Equal(serving(t, b)) {
			t.Fatal("the replicas serve different certificates")
		}
		if err := a.Ready(); err != nil {
			t.Errorf("Ready = %v", err)
		}
		f.wantPublished(a)
	})

	t.Run("a caBundle someone overwrote is put back on the next pass", func(t *testing.T) {
		var v admissionregistrationv1.ValidatingWebhookConfiguration
		if err := f.client.Get(f.ctx, types.NamespacedName{Name: "v"}, &v); err != nil {
			t.Fatal(err)
		}
		v.Webhooks[1].ClientConfig.CABundle = []byte("stale")
		if err := f.client.Update(f.ctx, &v); err != nil {
			t.Fatal(err)
		}
		if err := a.step(f.ctx); err != nil {
			t.Fatal(err)
		}
		f.wantPublished(a)
	})

	t.Run("the serving certificate is renewed when a third of its life is left, and the other replica adopts it", func(t *testing.T) {
		old := serving(t, a)
		f.clock.add(4 * 24 * time.Hour) // 5 of 9 days left: not yet
		if err := a.step(f.ctx); err != nil {
			t.Fatal(err)
		}
		if !serving(t, a).Equal(old) {
			t.Fatal("renewed with more than a third of its life left")
		}
		f.clock.add(3 * 24 * time.Hour) // 2 of 9 days left
		if err := a.step(f.ctx); err != nil {
			t.Fatal(err)
		}
		renewed := serving(t, a)
		if renewed.Equal(old) {
			t.Fatal("not renewed")
		}
		if err := b.step(f.ctx); err != nil {
			t.Fatal(err)
		}
		if !serving(t, b).Equal(renewed) {
			t.Error("the other replica did not adopt the renewed certificate")
		}
	})

	t.Run("a new CA is published beside the old one before the serving certificate moves to it", func(t *testing.T) {
		oldCA := mustCAs(t, a.CABundle())[0]
		f.clock.add(6 * 24 * time.Hour) // day 13: the serving certificate is renewed again
		if err := a.step(f.ctx); err != nil {
			t.Fatal(err)
		}
		f.clock.add(8 * 24 * time.Hour) // day 21: 9 of 30 days left for the CA
		if err := a.step(f.ctx); err != nil {
			t.Fatal(err)
		}
		cas := mustCAs(t, a.CABundle())
		if len(cas) != 2 || !cas[1].Equal(oldCA) {
			t.Fatalf("bundle after CA rotation has %d CAs, want the new and the old", len(cas))
		}
		f.wantPublished(a)
		if serving(t, a).CheckSignatureFrom(oldCA) != nil {
			t.Fatal("the serving certificate moved to the new CA in the pass that published it")
		}
		if err := a.step(f.ctx); err != nil {
			t.Fatal(err)
		}
		if serving(t, a).CheckSignatureFrom(cas[0]) != nil {
			t.Fatal("the serving certificate did not move to the published new CA")
		}
		f.clock.add(10 * 24 * time.Hour) // day 31: the old CA has expired
		if err := a.step(f.ctx); err != nil {
			t.Fatal(err)
		}
		if n := len(mustCAs(t, a.CABundle())); n != 1 {
			t.Errorf("bundle has %d CAs after the old one expired, want 1", n)
		}
	})

	t.Run("handshakes verify against the published bundle across a rotation", func(t *testing.T) {
		lis, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{GetCertificate: a.GetCertificate})
		if err != nil {
			t.Fatal(err)
		}
		defer lis.Close()
		go func() {
			for {
				c, err := lis.Accept()
				if err != nil {
					return
				}
				go func() { _ = c.(*tls.Conn).Handshake(); c.Close() }()
			}
		}()
		dial := func() error {
			pool := x509.NewCertPool()
			pool.AppendCertsFromPEM(f.bundles()[0])
			c, err := tls.Dial("tcp", lis.Addr().String(), &tls.Config{RootCAs: pool, ServerName: "relay-webhook.meshrelay-system.svc", Time: f.clock.Now})
			if err == nil {
				c.Close()
			}
			return err
		}
		for range 6 {
			if err := dial(); err != nil {
				t.Fatalf("handshake at %s: %v", f.clock.Now().Format(time.DateOnly), err)
			}
			f.clock.add(4 * 24 * time.Hour)
			if err := a.step(f.ctx); err != nil {
				t.Fatal(err)
			}
		}
	})
}

func TestABrokenSecretThatIsNotOursIsLeftAlone(t *testing.T) {
	f := newFixture(t)
	broken := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: "meshrelay-system", Name: "relay-webhook-tls"},
		Data:       map[string][]byte{relaysecret.KeyTLSCert: []byte("not PEM")},
	}
	if err := f.client.Create(f.ctx, broken); err != nil {
		t.Fatal(err)
	}
	m := f.manager()
	err := m.Ensure(f.ctx)
	if err == nil || m.Ready() == nil {
		t.Fatalf("Ensure = %v, Ready = %v: want both to report the broken secret", err, m.Ready())
	}
	var got corev1.Secret
	if err := f.client.Get(f.ctx, client.ObjectKeyFromObject(broken), &got); err != nil {
		t.Fatal(err)
	}
	if string(got.Data[relaysecret.KeyTLSCert]) != "not PEM" {
		t.Error("the secret was overwritten")
	}

	got.Annotations = map[string]string{meshv1alpha1.ManagedByAnnotation: "relay-webhook"}
	if err := f.client.Update(f.ctx, &got); err != nil {
		t.Fatal(err)
	}
	if err := m.Ensure(f.ctx); err != nil {
		t.Fatalf("Ensure on our own broken secret: %v", err)
	}
	if err := m.Ready(); err != nil {
		t.Errorf("Ready after replacing our own broken secret: %v", err)
	}
}

func mustCAs(t *testing.T, bundle []byte) []*x509.Certificate {
	t.Helper()
	cas, err := pki.DecodeCertificates(bundle)
	if err != nil {
		t.Fatal(err)
	}
	return cas
}
