package server

import (
	"context"
	"crypto/tls"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	grpccreds "google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshrelay/meshrelay/internal/relayctl/fleet"
	"github.com/meshrelay/meshrelay/internal/testenv"
	meshv1alpha1 "github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
	"github.com/meshrelay/meshrelay/pkg/pki"
	"github.com/meshrelay/meshrelay/pkg/relaysecret"
	relayv1 "github.com/meshrelay/meshrelay/relay/api/v1"
)

// revSigner signs client certificates with the relay's signing CA, as
// relay-server does (bound to a UID) or another issuer would (unbound).
type revSigner struct {
	t  *testing.T
	ca *pki.Certified
}

func newRevSigner(t *testing.T, f *relayFixture) *revSigner {
	t.Helper()
	ca, err := certifiedFromSecret(relaysecret.Signing, f.secret(f.cfg.SigningTLSSecret.Name))
	if err != nil {
		t.Fatal(err)
	}
	return &revSigner{t: t, ca: ca}
}

func (s *revSigner) issue(uid types.UID, ttl time.Duration) *tls.Certificate {
	s.t.Helper()
	now := time.Now()
	iss, err := pki.NewIssuer(s.ca, pki.Policy{Role: pki.RoleClient, TTL: ttl}, now)
	if err != nil {
		s.t.Fatal(err)
	}
	key, _ := pki.GenerateKey(pki.ECDSAP256)
	csr, _ := pki.NewCSR(key, "cluster-1")
	got, err := iss.SignPEM(csr, pki.Identity{DNSNames: []string{"cluster-1"}, ClusterUID: string(uid)}, now)
	if err != nil {
		s.t.Fatal(err)
	}
	keyPEM, _ := pki.EncodePrivateKey(key)
	pair, err := tls.X509KeyPair(got.CertPEM, keyPEM)
	if err != nil {
		s.t.Fatal(err)
	}
	return &pair
}

// renew asks the server behind rc for a new certificate of cluster-1.
func renew(ctx context.Context, rc relayv1.RelayClient) (*tls.Certificate, error) {
	key, _ := pki.GenerateKey(pki.ECDSAP256)
	csr, _ := pki.NewCSR(key, "cluster-1")
	resp, err := rc.Renew(ctx, &relayv1.RenewRequest{Csr: csr})
	if err != nil {
		return nil, err
	}
	keyPEM, _ := pki.EncodePrivateKey(key)
	pair, err := tls.X509KeyPair(resp.CertificateChain, keyPEM)
	if err != nil {
		return nil, err
	}
	return &pair, nil
}

// streamEnd is when and how a held stream ended.
type streamEnd struct {
	at  time.Time
	err error
}

// heldStreams are an agent's push and pull streams on one connection to one
// replica, watched until they end.
type heldStreams struct {
	name       string
	pull, push chan streamEnd
	// cancel ends both streams from the agent's side.
	cancel func()
}

// holdStreams opens a pull and a push stream with cert on a connection of
// its own to f, waits until f has both open, and watches them.
func holdStreams(t *testing.T, f *relayFixture, name string, cert *tls.Certificate) *heldStreams {
	t.Helper()
	tc := &tls.Config{RootCAs: f.roots(), ServerName: f.cfg.Authority, MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{*cert}}
	conn, err := grpc.NewClient(f.addr, grpc.WithTransportCredentials(grpccreds.NewTLS(tc)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); conn.Close() })
	rc := relayv1.NewRelayClient(conn)
	pull, err := rc.Pull(ctx, &relayv1.PullRequest{Replica: name})
	if err != nil {
		t.Fatalf("%s: Pull: %v", name, err)
	}
	if in, err := pull.Recv(); err != nil || in.GetTrustBundle() == nil {
		t.Fatalf("%s: first instruction %v, %v; want the trust bundle", name, in, err)
	}
	push, err := rc.Push(ctx)
	if err != nil {
		t.Fatalf("%s: Push: %v", name, err)
	}
	if err := push.Send(&relayv1.PushMessage{Message: &relayv1.PushMessage_Status{Status: &relayv1.AgentStatus{AgentVersion: "test", Replica: name}}}); err != nil {
		t.Fatalf("%s: push Send: %v", name, err)
	}
	h := &heldStreams{name: name, pull: make(chan streamEnd, 1), push: make(chan streamEnd, 1), cancel: cancel}
	go func() {
		for {
			if _, err := pull.Recv(); err != nil {
				h.pull <- streamEnd{time.Now(), err}
				return
			}
		}
	}()
	go func() {
		// RecvMsg on a client stream returns when the server ends it (or
		// its connection goes), without closing the sending side.
		err := push.RecvMsg(&relayv1.PushSummary{})
		h.push <- streamEnd{time.Now(), err}
	}()
	return h
}

// ended waits up to 10s for the stream on ch to end.
func ended(t *testing.T, what string, ch chan streamEnd) streamEnd {
	t.Helper()
	select {
	case e := <-ch:
		return e
	case <-time.After(10 * time.Second):
		t.Fatalf("%s is still open 10s later", what)
	}
	return streamEnd{}
}

// open reports whether neither stream ended.
func (h *heldStreams) open() bool { return len(h.pull) == 0 && len(h.push) == 0 }

// wantClosedWithin checks that both streams of h end within limit of
// since, the pull stream with code and msg (the push stream's connection
// is closed after that, which the agent sees as Unavailable), and returns
// the slower of the two.
func (h *heldStreams) wantClosedWithin(t *testing.T, since time.Time, limit time.Duration, code codes.Code, msg string) time.Duration {
	t.Helper()
	pull := ended(t, h.name+" pull stream", h.pull)
	push := ended(t, h.name+" push stream", h.push)
	wantStatus(t, pull.err, code, msg)
	if c := status.Code(push.err); c != code && c != codes.Unavailable {
		t.Errorf("%s push stream ended with %v, want %s or Unavailable", h.name, push.err, code)
	}
	slowest := max(pull.at.Sub(since), push.at.Sub(since))
	if slowest >= limit || pull.at.Before(since) || push.at.Before(since) {
		t.Errorf("%s: streams ended %s (pull) and %s (push) after the change, want both within [0, %s)", h.name, pull.at.Sub(since), push.at.Sub(since), limit)
	}
	return slowest
}

func kcOf(t *testing.T, f *relayFixture, name string) *meshv1alpha1.KubernetesCluster {
	t.Helper()
	var kc meshv1alpha1.KubernetesCluster
	if err := f.cluster.Client.Get(t.Context(), types.NamespacedName{Namespace: f.cfg.Namespace, Name: name}, &kc); err != nil {
		t.Fatal(err)
	}
	return &kc
}

func TestRevokingAClusterRefusesItsCertificatesAndClosesItsStreamsOnEveryReplica(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Names: []string{"mgmt"}})
	c := env.Clusters[0]
	f1 := startRelay(t, c, "gloo-mesh", nil)
	f2 := startRelay(t, c, "gloo-mesh", nil)
	replicas := []*relayFixture{f1, f2}
	ctx := t.Context()
	f1.register("cluster-1")
	kc := kcOf(t, f1, "cluster-1")
	signer := newRevSigner(t, f1)

	// An unbound certificate (another issuer's) gets a bound one from
	// each replica's Renew once the replica sees the registration.
	unbound := signer.issue("", time.Hour)
	var cert *tls.Certificate
	for i, f := range replicas {
		rc := f.dial(unbound)
		f.eventually(fmt.Sprintf("replica %d renews cluster-1", i+1), func() error {
			got, err := renew(ctx, rc)
			cert = got
			return err
		})
	}
	t.Run("relay-server binds the certificates it signs to the KubernetesCluster's UID", func(t *testing.T) {
		uid, ok, err := pki.ClusterUID(cert.Leaf)
		if err != nil || !ok || uid != string(kc.UID) {
			t.Errorf("renewed certificate's binding = %q, %v, %v; want %s", uid, ok, err, kc.UID)
		}
	})

	held := []*heldStreams{holdStreams(t, f1, "replica-1", cert), holdStreams(t, f2, "replica-2", cert)}
	idle := f1.dial(cert)
	session := &keepFirstSession{}
	for range 2 {
		if _, err := handshake(f1, session, cert); err != nil {
			t.Fatalf("mutual TLS handshake before the revocation: %v", err)
		}
	}
	if resumed, err := handshake(f1, session, cert); err != nil || !resumed {
		t.Fatalf("a mutual TLS session before the revocation: resumed %v, %v; want it to resume", resumed, err)
	}
	if _, err := renew(ctx, idle); err != nil {
		t.Fatalf("Renew before the revocation: %v", err)
	}

	written := time.Now() // streams may end before the write's answer arrives
	revoked, err := fleet.Revoke(ctx, c.Client, fleet.RevokeOptions{Name: "cluster-1", Namespace: "gloo-mesh"})
	if err != nil {
		t.Fatalf("relayctl revoke: %v", err)
	}
	t.Run("relayctl revoke sets issuedBefore to the next second", func(t *testing.T) {
		if ib := revoked.IssuedBefore; ib == nil || ib.Time.Before(written.Add(-time.Second)) || ib.Time.After(written.Add(time.Second)) {
			t.Errorf("issuedBefore %v, want the second after the revocation (%s)", ib, written)
		}
		if got := kcOf(t, f1, "cluster-1").Spec.Revocation; got == nil || !got.IssuedBefore.Equal(revoked.IssuedBefore) {
			t.Errorf("stored revocation %+v, want issuedBefore %s", got, revoked.IssuedBefore)
		}
	})
	t.Run("open streams close within a second on both replicas, saying why", func(t *testing.T) {
		for _, h := range held {
			took := h.wantClosedWithin(t, written, time.Second, codes.PermissionDenied, "is revoked: issued at")
			t.Logf("%s: streams closed %s after the revocation was written", h.name, took)
		}
	})
	t.Run("Renew on a connection opened before the revocation is refused", func(t *testing.T) {
		_, err := renew(ctx, idle)
		wantStatus(t, err, codes.PermissionDenied, "before spec.revocation.issuedBefore")
		wantStatus(t, err, codes.PermissionDenied, "relayctl register cluster-1 issues a fresh bootstrap token")
	})
	t.Run("a session of the certificate from before the revocation does not resume", func(t *testing.T) {
		if resumed, err := handshake(f1, session, cert); err == nil {
			t.Errorf("handshake with the revoked certificate's session succeeded (resumed %v), want it refused", resumed)
		}
	})
	t.Run("new handshakes with the certificate are refused on both replicas", func(t *testing.T) {
		for i, f := range replicas {
			_, err := renew(ctx, f.dial(cert))
			if status.Code(err) != codes.Unavailable {
				t.Errorf("replica %d: Renew on a new connection: %v, want the handshake refused (Unavailable)", i+1, err)
			}
			if v := testenv.MetricValue(f.metric(`relay_client_certificates_refused_total{at="handshake",reason="revoked"}`)); v < 1 {
				t.Errorf("replica %d counts %v handshakes refused as revoked, want at least 1", i+1, v)
			}
			if v := testenv.MetricValue(f.metric(`relay_client_certificates_refused_total{at="stream",reason="revoked"}`)); v != 2 {
				t.Errorf("replica %d counts %v streams ended as revoked, want 2 (push and pull)", i+1, v)
			}
		}
	})

	var fresh *tls.Certificate
	t.Run("the way back: a fresh bootstrap token gets a certificate past the revocation, which is admitted", func(t *testing.T) {
		// What relayctl register does, at once: the bootstrap lands in
		// the second the revocation covers and waits until it is over.
		token := f2.issueToken("cluster-1", time.Now(), time.Hour)
		key, _ := pki.GenerateKey(pki.ECDSAP256)
		csr, _ := pki.NewCSR(key, "cluster-1")
		resp, err := f2.dial(nil).Bootstrap(ctx, &relayv1.BootstrapRequest{Cluster: "cluster-1", Token: token, Csr: csr})
		if err != nil {
			t.Fatalf("Bootstrap with a fresh token after the revocation: %v", err)
		}
		keyPEM, _ := pki.EncodePrivateKey(key)
		pair, err := tls.X509KeyPair(resp.CertificateChain, keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		if at := pki.IssuedAt(pair.Leaf); at.Before(revoked.IssuedBefore.Time) {
			t.Errorf("bootstrapped certificate issued at %s, before the revocation's cutoff %s", at, revoked.IssuedBefore)
		}
		for i, f := range replicas {
			if _, err := renew(ctx, f.dial(&pair)); err != nil {
				t.Errorf("replica %d: Renew with the bootstrapped certificate: %v", i+1, err)
			}
		}
		fresh = &pair
	})
	if fresh == nil {
		t.FailNow()
	}

	t.Run("deleting and re-creating the KubernetesCluster refuses the old registration's certificates", func(t *testing.T) {
		if err := c.Client.Delete(ctx, kc); err != nil {
			t.Fatal(err)
		}
		f1.eventually("the KubernetesCluster is gone", func() error {
			var got meshv1alpha1.KubernetesCluster
			if err := c.Client.Get(ctx, types.NamespacedName{Namespace: "gloo-mesh", Name: "cluster-1"}, &got); !apierrors.IsNotFound(err) {
				return fmt.Errorf("still there: %v", err)
			}
			return nil
		})
		f1.register("cluster-1")
		again := kcOf(t, f1, "cluster-1")
		if again.UID == kc.UID || again.Spec.Revocation != nil {
			t.Fatalf("re-created KubernetesCluster has UID %s (was %s) and revocation %+v", again.UID, kc.UID, again.Spec.Revocation)
		}
		current := signer.issue(again.UID, time.Hour)
		for i, f := range replicas {
			rc := f.dial(current)
			f.eventually(fmt.Sprintf("replica %d sees the new registration", i+1), func() error {
				_, err := renew(ctx, rc)
				return err
			})
			for name, old := range map[string]*tls.Certificate{"the revoked certificate": cert, "a certificate issued after the revocation": fresh} {
				if _, err := renew(ctx, f.dial(old)); status.Code(err) != codes.Unavailable {
					t.Errorf("replica %d: %s of the earlier registration: %v, want the handshake refused (Unavailable)", i+1, name, err)
				}
			}
			if v := testenv.MetricValue(f.metric(`relay_client_certificates_refused_total{at="handshake",reason="reregistered"}`)); v < 2 {
				t.Errorf("replica %d counts %v handshakes refused as another registration's, want at least 2", i+1, v)
			}
		}
	})

	t.Run("revoking one serial closes only that certificate's streams, on both replicas", func(t *testing.T) {
		again := kcOf(t, f1, "cluster-1")
		target, other := signer.issue(again.UID, time.Hour), signer.issue(again.UID, time.Hour)
		held := []*heldStreams{holdStreams(t, f1, "replica-1", target), holdStreams(t, f2, "replica-2", target)}
		bystander := holdStreams(t, f1, "bystander", other)

		// Merge patches: the status writers change the object's
		// resourceVersion while the test runs.
		serials := func(serial string) client.Patch {
			return client.RawPatch(types.MergePatchType, []byte(`{"spec":{"revocation":{"serials":["`+serial+`"]}}}`))
		}
		if err := c.Client.Patch(ctx, again.DeepCopy(), serials(strings.ToUpper(target.Leaf.SerialNumber.Text(16)))); !apierrors.IsInvalid(err) {
			t.Errorf("an uppercase serial: %v, want the API server to refuse it (Invalid)", err)
		}
		written := time.Now()
		if err := c.Client.Patch(ctx, again.DeepCopy(), serials(target.Leaf.SerialNumber.Text(16))); err != nil {
			t.Fatal(err)
		}
		for _, h := range held {
			took := h.wantClosedWithin(t, written, time.Second, codes.PermissionDenied, "spec.revocation.serials of KubernetesCluster cluster-1 lists it")
			t.Logf("%s: streams closed %s after the serial was written", h.name, took)
		}
		if !bystander.open() {
			t.Error("the streams of another certificate of the cluster closed too")
		}
		if _, err := renew(ctx, f2.dial(target)); status.Code(err) != codes.Unavailable {
			t.Errorf("new handshake with the revoked serial: %v, want refused (Unavailable)", err)
		}
		if _, err := renew(ctx, f2.dial(other)); err != nil {
			t.Errorf("another serial of the cluster: %v, want admitted", err)
		}

		// relayctl revoke --serial, in openssl's form, adds to the list.
		colons := strings.ToUpper(other.Leaf.SerialNumber.Text(16))
		colons = strings.Join(splitEvery(fmt.Sprintf("%0*s", len(colons)+len(colons)%2, colons), 2), ":")
		written = time.Now()
		got, err := fleet.Revoke(ctx, c.Client, fleet.RevokeOptions{Name: "cluster-1", Namespace: "gloo-mesh", Serials: []string{colons}})
		if err != nil {
			t.Fatalf("relayctl revoke --serial %s: %v", colons, err)
		}
		if want := []string{target.Leaf.SerialNumber.Text(16), other.Leaf.SerialNumber.Text(16)}; strings.Join(got.Serials, ",") != strings.Join(want, ",") || got.IssuedBefore != nil {
			t.Errorf("serials %v, issuedBefore %v; want %v and no issuedBefore", got.Serials, got.IssuedBefore, want)
		}
		took := bystander.wantClosedWithin(t, written, time.Second, codes.PermissionDenied, "spec.revocation.serials")
		t.Logf("bystander: streams closed %s after relayctl revoke --serial", took)
	})
}

func splitEvery(s string, n int) []string {
	var out []string
	for len(s) > n {
		out = append(out, s[:n])
		s = s[n:]
	}
	return append(out, s)
}

func TestStreamsEndWhenTheirClientCertificateExpiresAndItsConnectionCannotRenew(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Names: []string{"mgmt"}})
	f := startRelay(t, env.Clusters[0], "gloo-mesh", nil)
	ctx := t.Context()
	f.register("cluster-1")
	kc := kcOf(t, f, "cluster-1")
	signer := newRevSigner(t, f)
	long := f.dial(signer.issue(kc.UID, time.Hour))
	f.eventually("the registration reaches the cache", func() error {
		_, err := renew(ctx, long)
		return err
	})

	short := signer.issue(kc.UID, 4*time.Second)
	notAfter := short.Leaf.NotAfter
	h := holdStreams(t, f, "agent", short)
	// A connection that is open, with no stream, when the certificate
	// expires.
	idle := f.dial(short)
	if _, err := renew(ctx, idle); err != nil {
		t.Fatalf("Renew before expiry: %v", err)
	}
	if time.Now().After(notAfter) {
		t.Fatalf("the certificate expired (%s) before the streams were set up; the machine is too slow for a 4s certificate", notAfter)
	}

	t.Run("streams close within a second of NotAfter", func(t *testing.T) {
		took := h.wantClosedWithin(t, notAfter, time.Second, codes.Unauthenticated, "expired at "+notAfter.UTC().Format(time.RFC3339))
		t.Logf("streams closed %s after NotAfter", took)
		if v := testenv.MetricValue(f.metric(`relay_client_certificates_refused_total{at="stream",reason="expired"}`)); v != 2 {
			t.Errorf("%v streams counted as ended for expiry, want 2", v)
		}
	})
	t.Run("Renew on a connection whose certificate expired is refused with the way back", func(t *testing.T) {
		_, err := renew(ctx, idle)
		wantStatus(t, err, codes.Unauthenticated, "expired at "+notAfter.UTC().Format(time.RFC3339))
		wantStatus(t, err, codes.Unauthenticated, "relayctl register cluster-1 issues a fresh bootstrap token")
		if m := f.metric(`relay_certificates_refused_total{call="renew",reason="expired"}`); !strings.HasSuffix(m, " 1") {
			t.Errorf("renew refusals for expiry: %q, want 1", m)
		}
	})
}

// keepFirstSession is a client session cache that keeps the first session
// it is given and offers it for every handshake.
type keepFirstSession struct{ state *tls.ClientSessionState }

func (c *keepFirstSession) Get(string) (*tls.ClientSessionState, bool) {
	return c.state, c.state != nil
}

func (c *keepFirstSession) Put(_ string, cs *tls.ClientSessionState) {
	if c.state == nil && cs != nil {
		c.state = cs
	}
}

// resumes dials f offering cache's session, reads until the server's first
// HTTP/2 frame (which delivers a TLS 1.3 session ticket), and reports
// whether the handshake resumed.
func resumes(t *testing.T, f *relayFixture, cache tls.ClientSessionCache) bool {
	t.Helper()
	resumed, err := handshake(f, cache, nil)
	if err != nil {
		t.Fatal(err)
	}
	return resumed
}

// handshake dials f offering cache's session and cert (if not nil), reads
// the server's first HTTP/2 frame, and reports whether the handshake
// resumed, or how the connection failed.
func handshake(f *relayFixture, cache tls.ClientSessionCache, cert *tls.Certificate) (bool, error) {
	tc := &tls.Config{RootCAs: f.roots(), ServerName: f.cfg.Authority, NextProtos: []string{"h2"}, ClientSessionCache: cache}
	if cert != nil {
		tc.Certificates = []tls.Certificate{*cert}
	}
	conn, err := tls.Dial("tcp", f.addr, tc)
	if err != nil {
		return false, fmt.Errorf("TLS dial: %w", err)
	}
	defer conn.Close()
	// The client preface and an empty SETTINGS frame.
	if _, err := conn.Write(append([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), 0, 0, 0, 4, 0, 0, 0, 0, 0)); err != nil {
		return false, fmt.Errorf("write the HTTP/2 preface: %w", err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Read(make([]byte, 64)); err != nil {
		return false, fmt.Errorf("read the server's first frame: %w", err)
	}
	return conn.ConnectionState().DidResume, nil
}

func TestSessionTicketsDoNotResumeAcrossASigningChange(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Names: []string{"mgmt"}})
	f := startRelay(t, env.Clusters[0], "gloo-mesh", nil)
	cache := &keepFirstSession{}
	if resumes(t, f, cache) || cache.state == nil {
		t.Fatalf("first handshake resumed, or gave no session ticket (%v)", cache.state != nil)
	}
	if !resumes(t, f, cache) {
		t.Fatal("a second handshake with the session did not resume: nothing below would prove anything")
	}

	rootCA, err := certifiedFromSecret(relaysecret.Root, f.secret(f.cfg.RootTLSSecret.Name))
	if err != nil {
		t.Fatal(err)
	}
	next, err := rootCA.NewIntermediateCA(pki.Options{CommonName: "rotated-signing-ca", TTL: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	rootsBefore := f.srv.keys.roots.Load()
	s := f.secret(f.cfg.SigningTLSSecret.Name)
	s.Data["tls.crt"] = next.CertPEM()
	s.Data["tls.key"], _ = next.KeyPEM()
	if err := f.cluster.Client.Update(t.Context(), s); err != nil {
		t.Fatal(err)
	}
	f.eventually("the server loads the new signing CA", func() error {
		if iss := f.srv.keys.issuer.Load(); iss == nil || !iss.CA().Cert.Equal(next.Cert) || f.srv.keys.roots.Load() == rootsBefore {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	if resumes(t, f, cache) {
		t.Error("a session from before the signing change resumed after it, skipping verification against the new roots")
	}
	fresh := &keepFirstSession{}
	resumes(t, f, fresh)
	if !resumes(t, f, fresh) {
		t.Error("sessions issued after the change do not resume")
	}
}
