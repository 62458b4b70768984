package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshrelay/meshrelay/internal/testenv"
	meshv1alpha1 "github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/pkg/pki"
	"github.com/meshrelay/meshrelay/pkg/relaysecret"
	relayv1 "github.com/meshrelay/meshrelay/relay/api/v1"
)

// rotatingAgent does what relay-agent does across a rotation, over the
// relay protocol: it holds a push and a pull stream, acknowledges each
// trust bundle it is sent, renews when told to (RenewAt) and then moves
// its streams to a connection made with the new certificate before it
// closes the old one, as relay-agent does. A stream the server ends is a
// drop; every fresh handshake must succeed.
type rotatingAgent struct {
	t       *testing.T
	f       *relayFixture
	cluster string

	mu      sync.Mutex
	cert    *tls.Certificate
	bundle  []byte
	renewed int
	// storeFails makes renew keep the certificate it got unused, as an
	// agent whose cluster refuses the client secret's write does.
	storeFails bool
	// failures are fresh handshakes or renewals that failed; drops the
	// streams the server ended.
	failures []string
	drops    int
	push     relayv1.Relay_PushClient
	cancel   context.CancelFunc
}

func newRotatingAgent(t *testing.T, f *relayFixture, cluster string) *rotatingAgent {
	t.Helper()
	f.register(cluster)
	a := &rotatingAgent{t: t, f: f, cluster: cluster}
	cert, _ := f.bootstrap(f.dial(nil), cluster, f.token())
	a.cert = cert
	a.bundle = f.secret(f.cfg.RootTLSSecret.Name).Data[relaysecret.KeyCACert]
	if err := a.connect(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		a.mu.Lock()
		defer a.mu.Unlock()
		a.cancel()
	})
	return a
}

// connect opens push and pull streams with the newest certificate, then
// closes the streams held before.
func (a *rotatingAgent) connect() error {
	ctx, cancel := context.WithCancel(context.Background())
	rc := a.client()
	push, err := rc.Push(ctx)
	if err != nil {
		cancel()
		return fmt.Errorf("Push: %w", err)
	}
	pull, err := rc.Pull(ctx, &relayv1.PullRequest{Replica: a.cluster + "-agent"})
	if err != nil {
		cancel()
		return fmt.Errorf("Pull: %w", err)
	}
	first, err := pull.Recv()
	if err != nil {
		cancel()
		return fmt.Errorf("pull stream: %w", err)
	}
	a.mu.Lock()
	old := a.cancel
	a.push, a.cancel = push, cancel
	a.mu.Unlock()
	if old != nil {
		old()
	}
	a.handle(first)
	a.status("")
	go func() {
		for {
			in, err := pull.Recv()
			if err != nil {
				if ctx.Err() == nil {
					a.mu.Lock()
					a.drops++
					a.failures = append(a.failures, fmt.Sprintf("held stream ended: %v", err))
					a.mu.Unlock()
				}
				return
			}
			a.handle(in)
		}
	}()
	return nil
}

func (a *rotatingAgent) handle(in *relayv1.Instruction) {
	switch {
	case in.GetTrustBundle() != nil:
		b := in.GetTrustBundle().GetCaCertificates()
		a.mu.Lock()
		a.bundle = b
		a.mu.Unlock()
		a.status(sha256Hex(b))
	case in.GetRenewAt() != nil:
		go a.renew()
	}
}

// client dials with the agent's newest certificate and bundle.
func (a *rotatingAgent) client() relayv1.RelayClient {
	a.mu.Lock()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(a.bundle)
	cert := a.cert
	a.mu.Unlock()
	return a.f.dialWith(pool, cert)
}

// freshCall opens and closes a push stream on rc: a handshake that
// presents the client certificate, and a call the server must admit.
func freshCall(ctx context.Context, rc relayv1.RelayClient) error {
	push, err := rc.Push(ctx)
	if err == nil {
		_, err = push.CloseAndRecv()
	}
	return err
}

// status reports the agent's certificate, and acknowledges the bundle with
// sha bundleSHA when it is not empty.
func (a *rotatingAgent) status(bundleSHA string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if bundleSHA == "" {
		bundleSHA = sha256Hex(a.bundle)
	}
	_ = a.push.Send(&relayv1.PushMessage{Message: &relayv1.PushMessage_Status{Status: &relayv1.AgentStatus{
		AgentVersion: "test", Replica: a.cluster + "-agent", ClientCertificateNotAfter: a.cert.Leaf.NotAfter.Unix(), TrustBundleSha256: bundleSHA,
	}}})
}

func (a *rotatingAgent) fail(format string, args ...any) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.failures = append(a.failures, fmt.Sprintf(format, args...))
}

// renew renews over a new connection, as the rotator does.
func (a *rotatingAgent) renew() {
	key, _ := pki.GenerateKey(pki.ECDSAP256)
	csr, _ := pki.NewCSR(key, a.cluster)
	resp, err := a.client().Renew(context.Background(), &relayv1.RenewRequest{Csr: csr})
	if err != nil {
		a.fail("Renew: %v", err)
		return
	}
	keyPEM, _ := pki.EncodePrivateKey(key)
	cert, err := tls.X509KeyPair(resp.CertificateChain, keyPEM)
	if err != nil {
		a.fail("renewed chain: %v", err)
		return
	}
	a.mu.Lock()
	if a.storeFails {
		a.renewed++
		a.mu.Unlock()
		return
	}
	a.cert, a.renewed = &cert, a.renewed+1
	a.mu.Unlock()
	if err := a.connect(); err != nil {
		a.fail("moving the streams to the new certificate: %v", err)
	}
}

func (a *rotatingAgent) setStoreFails(fails bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.storeFails = fails
}

// renewals counts the certificates renew got, stored or not.
func (a *rotatingAgent) renewals() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.renewed
}

// probe makes a fresh mutual TLS handshake and a call on it.
func (a *rotatingAgent) probe() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := freshCall(ctx, a.client()); err != nil {
		a.fail("fresh handshake: %v", err)
	}
}

func (a *rotatingAgent) check(t *testing.T) {
	t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.failures) > 0 {
		t.Errorf("agent %s: %d failures (%d dropped streams), first: %s", a.cluster, len(a.failures), a.drops, a.failures[0])
	}
}

// relayTrust returns the RelayTrust, empty while relay-server has not made
// it yet.
func relayTrust(t *testing.T, f *relayFixture) *meshv1alpha1.RelayTrust {
	t.Helper()
	var rt meshv1alpha1.RelayTrust
	if err := f.cluster.Client.Get(t.Context(), types.NamespacedName{Namespace: f.cfg.Namespace, Name: meshv1alpha1.RelayTrustName}, &rt); client.IgnoreNotFound(err) != nil {
		t.Fatalf("get RelayTrust: %v", err)
	}
	return &rt
}

func askRotation(t *testing.T, f *relayFixture, which string, now bool) {
	t.Helper()
	req := meshv1alpha1.RotationRequest{RequestedAt: metav1.NewTime(time.Now().Truncate(time.Second)), Now: now, Reason: "test"}
	patch := map[string]any{"spec": map[string]any{which: req}}
	rt := &meshv1alpha1.RelayTrust{ObjectMeta: metav1.ObjectMeta{Namespace: f.cfg.Namespace, Name: meshv1alpha1.RelayTrustName}}
	raw, _ := json.Marshal(patch)
	// relay-server's leader makes the RelayTrust once it leads.
	f.eventually("a "+which+" rotation is asked for", func() error {
		return f.cluster.Client.Patch(t.Context(), rt.DeepCopy(), client.RawPatch(types.MergePatchType, raw))
	})
}

func TestRootRotationGoesThroughEveryPhaseWithoutAFailedHandshake(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Names: []string{"mgmt"}})
	f := startRelay(t, env.Clusters[0], "gloo-mesh", func(c *config.Server) {
		c.RootRotationOverlap = metav1.Duration{Duration: 3 * time.Second}
		c.ClientCertificateTTL = metav1.Duration{Duration: time.Hour}
	})
	agents := []*rotatingAgent{newRotatingAgent(t, f, "cluster-1"), newRotatingAgent(t, f, "cluster-2")}
	oldRoot, _ := pki.DecodeCertificate(f.secret("relay-root-tls-secret").Data[relaysecret.KeyCACert])
	f.eventually("RelayTrust reports Stable with both clusters acknowledging the bundle", func() error {
		rt := relayTrust(t, f)
		if rt.Status.Phase != meshv1alpha1.PhaseStable || rt.Status.Bundle == nil || rt.Status.Bundle.Acknowledged != 2 {
			return fmt.Errorf("status %+v", rt.Status)
		}
		return nil
	})

	stop := make(chan struct{})
	var probes sync.WaitGroup
	for _, a := range agents {
		probes.Add(1)
		go func() {
			defer probes.Done()
			for {
				select {
				case <-stop:
					return
				case <-time.After(100 * time.Millisecond):
					a.probe()
				}
			}
		}()
	}
	askRotation(t, f, "rotateRoot", false)
	seen := map[meshv1alpha1.RotationPhase]bool{}
	testenv.Eventually(t, "the root rotation completes", 2*time.Minute, func() error {
		rt := relayTrust(t, f)
		seen[rt.Status.Phase] = true
		if rt.Status.Rotations.Root != 1 || rt.Status.Phase != meshv1alpha1.PhaseStable {
			return fmt.Errorf("phase %s, rotations %+v, pending %v", rt.Status.Phase, rt.Status.Rotations, rt.Status.Pending)
		}
		return nil
	})
	close(stop)
	probes.Wait()
	for _, p := range []meshv1alpha1.RotationPhase{meshv1alpha1.PhasePrepare, meshv1alpha1.PhaseActivate} {
		if !seen[p] {
			t.Errorf("phase %s was never reported in status (saw %v)", p, seen)
		}
	}
	for _, a := range agents {
		a.check(t)
		if a.renewed == 0 {
			t.Errorf("agent %s was never told to renew onto the new root", a.cluster)
		}
	}
	root := f.secret("relay-root-tls-secret")
	bundle, _ := pki.DecodeCertificates(root.Data[relaysecret.KeyCACert])
	if len(bundle) != 1 || bundle[0].Equal(oldRoot) {
		t.Fatalf("after the rotation ca.crt holds %d root(s), the old one among them: %v", len(bundle), bundle[0].Equal(oldRoot))
	}
	inter, _ := pki.DecodeCertificate(f.secret("relay-tls-signing-secret").Data[relaysecret.KeyTLSCert])
	if err := inter.CheckSignatureFrom(bundle[0]); err != nil {
		t.Errorf("the signing intermediate is not under the new root: %v", err)
	}
	if _, ok := f.secret("relay-tls-signing-secret").Data[relaysecret.KeyPreviousCACert]; ok {
		t.Errorf("previous.crt still holds the old root's intermediate after Retire")
	}
	if got := f.metric(`relay_rotations_total{certificate="root",result="success"}`); !strings.HasSuffix(got, " 1") {
		t.Errorf("relay_rotations_total for the root: %q", got)
	}
	if got := f.metric(`relay_rotation_phase{phase="Stable"}`); !strings.HasSuffix(got, " 1") {
		t.Errorf("relay_rotation_phase Stable: %q", got)
	}
}

func TestGeneratedIntermediateAndServerCertificateRenewOnSchedule(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Names: []string{"mgmt"}})
	f := startRelay(t, env.Clusters[0], "gloo-mesh", func(c *config.Server) {
		c.ServerCertificateTTL = metav1.Duration{Duration: 2 * time.Minute}
		c.SigningCertificateTTL = metav1.Duration{Duration: 2 * time.Minute}
		c.ServerRenewalRatio, c.SigningRenewalRatio = 0.9, 0.9
		c.ClientCertificateTTL = metav1.Duration{Duration: time.Minute}
	})
	a := newRotatingAgent(t, f, "cluster-1")
	firstServer, _ := pki.DecodeCertificate(f.secret("relay-server-tls-secret").Data[relaysecret.KeyTLSCert])
	testenv.Eventually(t, "two intermediate and three server rotations", 2*time.Minute, func() error {
		a.probe()
		rt := relayTrust(t, f)
		if rt.Status.Rotations.Intermediate < 2 || rt.Status.Rotations.Server < 3 {
			return fmt.Errorf("rotations %+v, pending %v", rt.Status.Rotations, rt.Status.Pending)
		}
		return nil
	})
	a.check(t)
	if a.renewed == 0 {
		t.Errorf("the agent was never told to renew after the intermediate changed")
	}
	cur, _ := pki.DecodeCertificate(f.secret("relay-server-tls-secret").Data[relaysecret.KeyTLSCert])
	if cur.Equal(firstServer) {
		t.Errorf("the server secret still holds its first certificate")
	}
	rt := relayTrust(t, f)
	if c := meta.FindStatusCondition(rt.Status.Conditions, ConditionReady); c == nil || c.Status != metav1.ConditionTrue {
		t.Errorf("Ready condition %+v", c)
	}
	if rt.Status.Server == nil || rt.Status.Server.RenewAt == nil || !rt.Status.Server.Generated {
		t.Errorf("status.server %+v", rt.Status.Server)
	}
}

// expiredSecret is a generated relay secret holding data.
func expiredSecret(t *testing.T, name, ns string, data map[string][]byte) *corev1.Secret {
	t.Helper()
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{meshv1alpha1.GeneratedLabel: "true"}},
		Type:       corev1.SecretTypeTLS, Data: data,
	}
}

func TestExpiredGeneratedCertificatesAreReplacedAtStart(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Names: []string{"mgmt"}})
	c := env.Clusters[0]
	ns := "gloo-mesh"
	if err := c.Client.Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	past := time.Now().Add(-3 * time.Hour)
	root, _ := pki.NewRootCA(pki.Options{CommonName: relaysecret.RootCommonName, TTL: 2 * time.Hour, Now: past.Add(-time.Hour)})
	liveRoot, _ := pki.NewRootCA(pki.Options{CommonName: relaysecret.RootCommonName, TTL: 24 * time.Hour})
	// An expired root (and so everything under it), and, in a second
	// namespace, a live root whose server certificate expired.
	for _, tc := range []struct {
		ns   string
		root *pki.Certified
	}{{ns, root}, {"other", liveRoot}} {
		if tc.ns != ns {
			if err := c.Client.Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: tc.ns}}); err != nil {
				t.Fatal(err)
			}
		}
		inter, err := tc.root.NewIntermediateCA(pki.Options{CommonName: relaysecret.SigningCommonName, TTL: 20 * time.Hour, Now: past})
		if err != nil {
			t.Fatal(err)
		}
		srv, err := tc.root.IssueServer(pki.Options{CommonName: "gloo-mesh-mgmt-server.gloo-mesh", DNSNames: []string{"gloo-mesh-mgmt-server.gloo-mesh"}, TTL: time.Minute, Now: past})
		if err != nil {
			t.Fatal(err)
		}
		for name, m := range map[string]*pki.Certified{"relay-root-tls-secret": tc.root, "relay-tls-signing-secret": inter, "relay-server-tls-secret": srv} {
			keyPEM, _ := m.KeyPEM()
			s := expiredSecret(t, name, tc.ns, map[string][]byte{relaysecret.KeyTLSCert: m.CertPEM(), relaysecret.KeyTLSKey: keyPEM, relaysecret.KeyCACert: m.CAPEM()})
			if err := c.Client.Create(t.Context(), s); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Run("an expired root is replaced with its intermediate and server certificate", func(t *testing.T) {
		f := startRelay(t, c, ns, nil)
		now := time.Now()
		for _, name := range []string{"relay-root-tls-secret", "relay-tls-signing-secret", "relay-server-tls-secret"} {
			cert, _ := pki.DecodeCertificate(f.secret(name).Data[relaysecret.KeyTLSCert])
			if !cert.NotAfter.After(now) {
				t.Errorf("secret %s still holds a certificate that expired at %s", name, cert.NotAfter)
			}
		}
		bundle, _ := pki.DecodeCertificates(f.secret("relay-root-tls-secret").Data[relaysecret.KeyCACert])
		if len(bundle) != 1 || bundle[0].Equal(root.Cert) {
			t.Errorf("ca.crt holds %d roots, the expired one among them", len(bundle))
		}
		f.eventually("the override annotations leave the root secret once the replacement is done", func() error {
			if a := f.secret("relay-root-tls-secret").Annotations; a[meshv1alpha1.AllowChainBreakAnnotation] != "" || a[meshv1alpha1.AllowRootRemovalAnnotation] != "" {
				return fmt.Errorf("annotations %v", a)
			}
			return nil
		})
		// An agent registered again (it gets the new root) bootstraps and connects.
		f.register("cluster-1")
		cert, _ := f.bootstrap(f.dial(nil), "cluster-1", f.token())
		if _, err := f.dial(cert).Push(t.Context()); err != nil {
			t.Errorf("an agent with a certificate under the new root cannot connect: %v", err)
		}
	})
	t.Run("an expired server certificate is replaced under the same root", func(t *testing.T) {
		f := startRelay(t, c, "other", nil)
		cert, _ := pki.DecodeCertificate(f.secret("relay-server-tls-secret").Data[relaysecret.KeyTLSCert])
		if !cert.NotAfter.After(time.Now()) || cert.CheckSignatureFrom(liveRoot.Cert) != nil {
			t.Errorf("server certificate not renewed under the live root: notAfter %s", cert.NotAfter)
		}
		f.register("cluster-2")
		f.bootstrap(f.dial(nil), "cluster-2", f.token())
	})
}

func TestRootSecretDeletedAloneIsNotMadeAgain(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Names: []string{"mgmt"}})
	f := startRelay(t, env.Clusters[0], "gloo-mesh", nil)
	f.register("cluster-1")
	cert, _ := f.bootstrap(f.dial(nil), "cluster-1", f.token())
	roots := f.roots()
	saved := f.secret("relay-root-tls-secret")
	if err := f.cluster.Client.Delete(t.Context(), saved); err != nil {
		t.Fatal(err)
	}
	f.eventually("RelayTrust says the root secret is missing and how to recover", func() error {
		c := meta.FindStatusCondition(relayTrust(t, f).Status.Conditions, ConditionReady)
		if c == nil || c.Status != metav1.ConditionFalse || !strings.Contains(c.Message, "relayctl restore") {
			return fmt.Errorf("Ready condition %+v", c)
		}
		return nil
	})
	var s corev1.Secret
	if err := f.cluster.Client.Get(t.Context(), client.ObjectKeyFromObject(saved), &s); err == nil {
		t.Fatalf("relay-server made a new root secret")
	}
	// A replica starting now does not make one either.
	if err := EnsureCA(t.Context(), f.cluster.Client, &f.cfg, testr.New(t)); err != nil {
		t.Errorf("EnsureCA: %v", err)
	}
	if err := f.cluster.Client.Get(t.Context(), client.ObjectKeyFromObject(saved), &s); err == nil {
		t.Fatalf("EnsureCA made a new root secret beside the remaining signing and server secrets")
	}
	// What still works keeps working: a fresh handshake with the agent's
	// certificate.
	if err := freshCall(t.Context(), f.dialWith(roots, cert)); err != nil {
		t.Errorf("an agent's fresh handshake failed after the root secret was deleted: %v", err)
	}
	// Restored, it is used again.
	saved.ResourceVersion, saved.UID = "", ""
	if err := f.cluster.Client.Create(t.Context(), saved); err != nil {
		t.Fatal(err)
	}
	f.eventually("RelayTrust is Ready again", func() error {
		c := meta.FindStatusCondition(relayTrust(t, f).Status.Conditions, ConditionReady)
		if c == nil || c.Status != metav1.ConditionTrue {
			return fmt.Errorf("Ready condition %+v", c)
		}
		return nil
	})
}

func TestAReplicaStartedDuringActivateAdmitsTheOldRootsCertificates(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Names: []string{"mgmt"}})
	c := env.Clusters[0]
	f := startRelay(t, c, "gloo-mesh", func(c *config.Server) { c.ReplicaName = "first" })
	f.register("cluster-1")
	cert, _ := f.bootstrap(f.dial(nil), "cluster-1", f.token())
	// cluster-1 never renews, so the rotation stays in Activate: its
	// certificate chains to the old root.
	askRotation(t, f, "rotateRoot", true)
	f.eventually("the root rotation reaches Activate and waits for cluster-1", func() error {
		rt := relayTrust(t, f)
		if rt.Status.Phase != meshv1alpha1.PhaseActivate || rt.Status.PendingCount != 1 {
			return fmt.Errorf("phase %s, pending %v", rt.Status.Phase, rt.Status.Pending)
		}
		return nil
	})
	g := startRelay(t, c, "gloo-mesh", func(c *config.Server) { c.ReplicaName = "second" })
	rc := g.dial(cert)
	if err := freshCall(t.Context(), rc); err != nil {
		t.Fatalf("a replica started during Activate refuses a certificate of the old root's intermediate (previous.crt): %v", err)
	}
	key, _ := pki.GenerateKey(pki.ECDSAP256)
	csr, _ := pki.NewCSR(key, "cluster-1")
	resp, err := rc.Renew(t.Context(), &relayv1.RenewRequest{Csr: csr})
	if err != nil {
		t.Fatalf("Renew with the old root's certificate: %v", err)
	}
	renewed, _ := pki.DecodeCertificates(resp.CertificateChain)
	bundle, _ := pki.DecodeCertificates(f.secret("relay-root-tls-secret").Data[relaysecret.KeyCACert])
	if _, err := pki.VerifyChain(renewed[0], renewed[1:], bundle[len(bundle)-1:], pki.RoleClient, time.Now()); err != nil {
		t.Errorf("the renewed certificate does not chain to the new root: %v", err)
	}
	// Activate waits a handover time after the last renewal, and the
	// leader looks every 10 s with the default lifetimes.
	testenv.Eventually(t, "with cluster-1 renewed, the rotation completes", 90*time.Second, func() error {
		rt := relayTrust(t, f)
		if rt.Status.Rotations.Root != 1 || rt.Status.Phase != meshv1alpha1.PhaseStable {
			return fmt.Errorf("phase %s, rotations %+v, pending %v", rt.Status.Phase, rt.Status.Rotations, rt.Status.Pending)
		}
		return nil
	})
}
