package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshrelay/meshrelay/internal/relayctl/fleet"
	"github.com/meshrelay/meshrelay/internal/testenv"
	meshv1alpha1 "github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
	"github.com/meshrelay/meshrelay/pkg/pki"
	"github.com/meshrelay/meshrelay/pkg/relaysecret"
	relayv1 "github.com/meshrelay/meshrelay/relay/api/v1"
)

// rotateSigning replaces relay-tls-signing-secret with a new CA named cn
// under the relay root.
func (f *relayFixture) rotateSigning(cn string) {
	f.t.Helper()
	rootCA, err := certifiedFromSecret(relaysecret.Root, f.secret(f.cfg.RootTLSSecret.Name))
	if err != nil {
		f.t.Fatal(err)
	}
	next, err := rootCA.NewIntermediateCA(pki.Options{CommonName: cn, TTL: 24 * time.Hour})
	if err != nil {
		f.t.Fatal(err)
	}
	s := f.secret(f.cfg.SigningTLSSecret.Name)
	s.Data[relaysecret.KeyTLSCert] = next.CertPEM()
	s.Data[relaysecret.KeyTLSKey], _ = next.KeyPEM()
	if err := f.cluster.Client.Update(f.t.Context(), s); err != nil {
		f.t.Fatalf("update the signing secret: %v", err)
	}
}

// An open connection keeps the chain its handshake verified. Once the
// signing CA has changed twice, the CA that issued the connection's
// certificate is neither the current nor the previous one: the server ends
// the connection's streams and refuses its Renew, instead of minting a
// genuine certificate for whoever still holds it.
func TestAnOpenConnectionIsRefusedOnceItsIssuerIsNoLongerAdmitted(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Names: []string{"mgmt"}})
	f := startRelay(t, env.Clusters[0], "gloo-mesh", nil)
	ctx := t.Context()
	f.register("cluster-1")
	kc := kcOf(t, f, "cluster-1")
	cert := newRevSigner(t, f).issue(kc.UID, time.Hour)

	held := holdStreams(t, f, "agent", cert)
	idle := f.dial(cert)
	if _, err := renew(ctx, idle); err != nil {
		t.Fatalf("Renew before the signing CA changes: %v", err)
	}

	f.rotateSigning("signing-2")
	f.eventually("renewals chain through signing-2", func() error {
		got, err := renew(ctx, idle)
		if err != nil {
			return err
		}
		if chain := got.Leaf; chain == nil || chain.Issuer.CommonName != "signing-2" {
			return fmt.Errorf("renewed certificate issued by %v", got.Leaf.Issuer)
		}
		return nil
	})
	t.Run("after one change the previous signing CA's connections stay", func(t *testing.T) {
		time.Sleep(4 * expiryInterval) // the eviction sweep has run on the new set
		if !held.open() {
			t.Error("the streams of a certificate from the previous signing CA ended")
		}
	})

	written := time.Now()
	f.rotateSigning("signing-3")
	t.Run("after a second change its streams end, saying why", func(t *testing.T) {
		took := held.wantClosedWithin(t, written, 3*time.Second, codes.PermissionDenied, "is no longer admitted on this connection")
		t.Logf("streams closed %s after the second change was written", took)
	})
	t.Run("and Renew on the connection is refused, naming the issuer and the fix", func(t *testing.T) {
		_, err := renew(ctx, idle)
		wantStatus(t, err, codes.PermissionDenied, "not by a CA relay-server admits client certificates from")
		wantStatus(t, err, codes.PermissionDenied, "relayctl register cluster-1 issues a fresh bootstrap token")
	})
	t.Run("the refusals are counted with reason issuer", func(t *testing.T) {
		if v := testenv.MetricValue(f.metric(`relay_client_certificates_refused_total{at="stream",reason="issuer"}`)); v != 2 {
			t.Errorf("streams ended for their issuer: %v, want 2 (push and pull)", v)
		}
		if v := testenv.MetricValue(f.metric(`relay_certificates_refused_total{call="renew",reason="issuer"}`)); v < 1 {
			t.Errorf("renewals refused for their issuer: %v, want at least 1", v)
		}
	})
	t.Run("a certificate from the current signing CA is still admitted", func(t *testing.T) {
		current := newRevSigner(t, f).issue(kc.UID, time.Hour)
		if _, err := renew(ctx, f.dial(current)); err != nil {
			t.Errorf("Renew with a certificate from signing-3: %v", err)
		}
	})
}

// A stream whose admission passed just before a revocation, and which is
// recorded just after the eviction that revocation caused, is refused by
// the second check openStream makes once the stream is recorded.
func TestAStreamRecordedAfterTheEvictionOfItsRevocationIsRefused(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Names: []string{"mgmt"}})
	c := env.Clusters[0]
	f := startRelay(t, c, "gloo-mesh", nil)
	ctx := t.Context()
	f.register("cluster-1")
	kc := kcOf(t, f, "cluster-1")
	cert := newRevSigner(t, f).issue(kc.UID, time.Hour)
	// The bystander holds streams of the same certificate: their end shows
	// that the revocation's eviction has run.
	bystander := holdStreams(t, f, "bystander", cert)

	var once sync.Once
	hookErr := make(chan error, 1)
	hook := func(cluster string, kind streamKind) {
		if cluster != "cluster-1" || kind != pullStream {
			return
		}
		once.Do(func() {
			// A merge patch: the status writers change the object's
			// resourceVersion while the test runs.
			patch := client.RawPatch(types.MergePatchType, []byte(`{"spec":{"revocation":{"serials":["`+serialOf(cert.Leaf)+`"]}}}`))
			if err := c.Client.Patch(context.Background(), kc.DeepCopy(), patch); err != nil {
				hookErr <- fmt.Errorf("revoke the serial: %w", err)
				return
			}
			select {
			case <-bystander.pull:
				hookErr <- nil
			case <-time.After(10 * time.Second):
				hookErr <- errors.New("the bystander's pull stream is still open 10s after the revocation: the eviction did not run")
			}
		})
	}
	afterAdmit.Store(&hook)
	t.Cleanup(func() { afterAdmit.Store(nil) })

	rc := f.dial(cert)
	pull, err := rc.Pull(ctx, &relayv1.PullRequest{Replica: "racer"})
	if err != nil {
		t.Fatalf("Pull: %v", err)
	}
	got := make(chan error, 1)
	go func() {
		in, err := pull.Recv()
		if err == nil {
			err = fmt.Errorf("the stream opened and sent %v", in)
		}
		got <- err
	}()
	select {
	case err := <-hookErr:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the stream never reached the point between admission and recording")
	}
	select {
	case err := <-got:
		wantStatus(t, err, codes.PermissionDenied, "spec.revocation.serials of KubernetesCluster cluster-1 lists it")
	case <-time.After(5 * time.Second):
		t.Fatal("the stream admitted before the revocation and recorded after its eviction is still open 5s later")
	}
	// The eviction counts the streams it ended once it has released the
	// connections lock, after their ends are seen.
	testenv.Eventually(t, "three streams counted as ended for the revocation", 10*time.Second, func() error {
		if v := testenv.MetricValue(f.metric(`relay_client_certificates_refused_total{at="stream",reason="revoked"}`)); v < 3 {
			return fmt.Errorf("streams ended as revoked: %v, want at least 3 (the bystander's two and the racer)", v)
		}
		return nil
	})
}

// frozenCluster is a cache that has not seen any change to one
// KubernetesCluster since kc: a watch that lags.
type frozenCluster struct {
	client.Reader
	kc *meshv1alpha1.KubernetesCluster
}

func (r frozenCluster) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	if out, ok := obj.(*meshv1alpha1.KubernetesCluster); ok && key.Name == r.kc.Name && key.Namespace == r.kc.Namespace {
		r.kc.DeepCopyInto(out)
		return nil
	}
	return r.Reader.Get(ctx, key, obj, opts...)
}

// serveWithCache serves f's relay service, keyring and TLS configuration on
// a listener of its own, reading KubernetesClusters through cache instead
// of f's, and returns a fixture that dials it.
func serveWithCache(t *testing.T, f *relayFixture, cache client.Reader) *relayFixture {
	t.Helper()
	svc := *f.srv.svc
	svc.reader = cache
	gs := grpc.NewServer(grpc.Creds(tlsCreds{config: f.srv.keys.tlsConfig()}))
	relayv1.RegisterRelayServer(gs, &svc)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	lagging := *f
	lagging.addr = lis.Addr().String()
	return &lagging
}

// Renew reads the KubernetesCluster from the API server, not the cache: a
// revocation written before the call is seen even while the cache has not
// caught up, and a certificate issued after the revocation's cutoff
// renews.
func TestRenewSeesARevocationTheCacheHasNotCaughtUpWith(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Names: []string{"mgmt"}})
	c := env.Clusters[0]
	f := startRelay(t, c, "gloo-mesh", nil)
	ctx := t.Context()
	f.register("cluster-1")
	kc := kcOf(t, f, "cluster-1")
	signer := newRevSigner(t, f)
	cert := signer.issue(kc.UID, time.Hour)
	lagging := serveWithCache(t, f, frozenCluster{Reader: f.srv.svc.reader, kc: kc})
	rc := lagging.dial(cert)
	if _, err := renew(ctx, rc); err != nil {
		t.Fatalf("Renew before the revocation: %v", err)
	}

	revoked, err := fleet.Revoke(ctx, c.Client, fleet.RevokeOptions{Name: "cluster-1", Namespace: "gloo-mesh"})
	if err != nil {
		t.Fatalf("relayctl revoke: %v", err)
	}
	t.Run("Renew right after the revocation is refused although the cache has none", func(t *testing.T) {
		var cached meshv1alpha1.KubernetesCluster
		_ = frozenCluster{kc: kc}.Get(ctx, client.ObjectKeyFromObject(kc), &cached)
		if cached.Spec.Revocation != nil {
			t.Fatal("the lagging cache shows the revocation: the test proves nothing")
		}
		_, err := renew(ctx, rc)
		wantStatus(t, err, codes.PermissionDenied, "is revoked: issued at")
	})
	t.Run("a certificate issued past the cutoff renews, with the revocation read the same way", func(t *testing.T) {
		time.Sleep(time.Until(revoked.IssuedBefore.Add(time.Second)))
		after := signer.issue(kc.UID, time.Hour)
		if at := pki.IssuedAt(after.Leaf); at.Before(revoked.IssuedBefore.Time) {
			t.Fatalf("test certificate issued at %s, before the cutoff %s", at, revoked.IssuedBefore)
		}
		got, err := renew(ctx, lagging.dial(after))
		if err != nil {
			t.Fatalf("Renew with a certificate from after the cutoff: %v", err)
		}
		if at := pki.IssuedAt(got.Leaf); at.Before(revoked.IssuedBefore.Time) {
			t.Errorf("renewed certificate issued at %s, before the cutoff %s: it would be refused at once", at, revoked.IssuedBefore)
		}
	})
}
