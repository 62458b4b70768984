package server

import (
	"context"
	"crypto/x509"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	testingclock "k8s.io/utils/clock/testing"

	meshv1alpha1 "github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
	"github.com/meshrelay/meshrelay/pkg/pki"
)

// testSigner is a root and signing CA, and issues client certificates
// the way relay-server does (bound) or another issuer would (unbound).
type testSigner struct {
	t  testing.TB
	ca *pki.Certified
}

func newTestSigner(t testing.TB, now time.Time) *testSigner {
	t.Helper()
	root, err := pki.NewRootCA(pki.Options{CommonName: "test-root", TTL: 24 * time.Hour, Now: now.Add(-time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	ca, err := root.NewIntermediateCA(pki.Options{CommonName: "test-signing", TTL: 12 * time.Hour, Now: now.Add(-time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	return &testSigner{t: t, ca: ca}
}

// issue signs a client certificate for cluster-1 at now, bound to uid
// unless uid is empty.
func (s *testSigner) issue(uid string, now time.Time, ttl time.Duration) *x509.Certificate {
	s.t.Helper()
	iss, err := pki.NewIssuer(s.ca, pki.Policy{Role: pki.RoleClient, TTL: ttl}, now)
	if err != nil {
		s.t.Fatal(err)
	}
	key, _ := pki.GenerateKey(pki.ECDSAP256)
	csr, _ := pki.NewCSR(key, "cluster-1")
	got, err := iss.SignPEM(csr, pki.Identity{DNSNames: []string{"cluster-1"}, ClusterUID: uid}, now)
	if err != nil {
		s.t.Fatal(err)
	}
	return got.Cert
}

func TestCheckAdmittedJudgesBindingRegistrationAndRevocation(t *testing.T) {
	created := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	s := newTestSigner(t, created)
	const uid, oldUID = "11111111-2222-4333-8444-555555555555", "99999999-2222-4333-8444-555555555555"
	bound := s.issue(uid, created.Add(time.Hour), time.Hour)
	kc := func(rev *meshv1alpha1.Revocation) *meshv1alpha1.KubernetesCluster {
		return &meshv1alpha1.KubernetesCluster{
			ObjectMeta: metav1.ObjectMeta{Name: "cluster-1", UID: types.UID(uid), CreationTimestamp: metav1.NewTime(created)},
			Spec:       meshv1alpha1.KubernetesClusterSpec{Revocation: rev},
		}
	}
	at := func(t time.Time) *metav1.Time { m := metav1.NewTime(t); return &m }
	tests := []struct {
		name   string
		kc     *meshv1alpha1.KubernetesCluster
		cert   *x509.Certificate
		want   string // "" admits
		reason string
	}{
		{"a certificate bound to the cluster's UID is admitted", kc(nil), bound, "", ""},
		{"a certificate bound to an earlier registration's UID is refused", kc(nil), s.issue(oldUID, created.Add(time.Hour), time.Hour),
			"issued to an earlier registration of cluster cluster-1 (KubernetesCluster UID " + oldUID + ", now " + uid + ")", reasonReregistered},
		{"an unbound certificate issued after the registration is admitted", kc(nil), s.issue("", created.Add(time.Minute), time.Hour), "", ""},
		{"an unbound certificate starting within the skew before the registration is admitted", kc(nil),
			s.issue("", created.Add(-registrationSkew+pki.DefaultBackdate), time.Hour), "", ""},
		{"an unbound certificate from before the registration is refused", kc(nil), s.issue("", created.Add(-10*time.Minute), time.Hour),
			"before KubernetesCluster cluster-1 was created at 2026-06-01T12:00:00Z", reasonReregistered},
		{"a bound certificate issued before issuedBefore is refused", kc(&meshv1alpha1.Revocation{IssuedBefore: at(created.Add(time.Hour + time.Second))}), bound,
			"is revoked: issued at 2026-06-01T13:00:00Z, before spec.revocation.issuedBefore 2026-06-01T13:00:01Z", reasonRevoked},
		{"a bound certificate issued at issuedBefore is admitted, its backdate not counted", kc(&meshv1alpha1.Revocation{IssuedBefore: at(created.Add(time.Hour))}), bound, "", ""},
		{"an unbound certificate starting before issuedBefore is refused", kc(&meshv1alpha1.Revocation{IssuedBefore: at(created.Add(time.Hour))}),
			s.issue("", created.Add(time.Hour+time.Minute), time.Hour), "is revoked", reasonRevoked},
		{"a listed serial is refused", kc(&meshv1alpha1.Revocation{Serials: []string{"abc", serialOf(bound)}}), bound,
			"is revoked: spec.revocation.serials of KubernetesCluster cluster-1 lists it", reasonRevoked},
		{"another serial of the cluster stays admitted", kc(&meshv1alpha1.Revocation{Serials: []string{"abc"}}), bound, "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := checkAdmitted(tc.kc, tc.cert)
			if tc.want == "" {
				if err != nil {
					t.Errorf("refused: %v", err)
				}
				return
			}
			st, _ := status.FromError(err)
			if st.Code() != codes.PermissionDenied || !strings.Contains(st.Message(), tc.want) {
				t.Fatalf("got %v, want PermissionDenied containing %q", err, tc.want)
			}
			if !strings.Contains(st.Message(), "relayctl register cluster-1") {
				t.Errorf("refusal %q does not say how the cluster gets back", st.Message())
			}
			if got := reasonOf(err); got != tc.reason {
				t.Errorf("reason %q, want %q", got, tc.reason)
			}
		})
	}
}

func TestCheckNotExpiredRefusesAtNotAfter(t *testing.T) {
	now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	cert := newTestSigner(t, now).issue("", now, time.Hour)
	if err := checkNotExpired("cluster-1", cert, cert.NotAfter.Add(-time.Second)); err != nil {
		t.Errorf("a second before NotAfter: %v", err)
	}
	err := checkNotExpired("cluster-1", cert, cert.NotAfter)
	st, _ := status.FromError(err)
	if st.Code() != codes.Unauthenticated || !strings.Contains(st.Message(), "expired at 2026-06-01T13:00:00Z") ||
		!strings.Contains(st.Message(), "relayctl register cluster-1 issues a fresh bootstrap token") || reasonOf(err) != reasonExpired {
		t.Errorf("at NotAfter: %v (reason %s), want Unauthenticated naming the expiry and the recovery", err, reasonOf(err))
	}
}

// TestAwaitRevocationWaitsOnTheClockAndEndsWithTheCall: signing for a
// cluster whose revocation takes effect within maxRevocationWait waits on
// the server's clock for a second past the cutoff, returns as soon as the
// call ends, and refuses a cutoff further away.
func TestAwaitRevocationWaitsOnTheClockAndEndsWithTheCall(t *testing.T) {
	now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	clk := testingclock.NewFakeClock(now)
	s := &service{clock: clk}
	revokedAt := func(at time.Time) *meshv1alpha1.KubernetesCluster {
		return &meshv1alpha1.KubernetesCluster{ObjectMeta: metav1.ObjectMeta{Name: "cluster-1"},
			Spec: meshv1alpha1.KubernetesClusterSpec{Revocation: &meshv1alpha1.Revocation{IssuedBefore: &metav1.Time{Time: at}}}}
	}

	t.Run("a cutoff within the wait is waited for on the clock", func(t *testing.T) {
		done := make(chan error, 1)
		go func() { done <- s.awaitRevocation(context.Background(), revokedAt(now)) }()
		for !clk.HasWaiters() {
			time.Sleep(time.Millisecond)
		}
		clk.Step(time.Second - time.Millisecond)
		select {
		case err := <-done:
			t.Fatalf("returned %v before a second past the cutoff", err)
		case <-time.After(50 * time.Millisecond):
		}
		clk.Step(time.Millisecond)
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("after the cutoff: %v, want nil", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("still waiting a second past the cutoff")
		}
	})

	t.Run("a call that ends while it waits returns at once with its status", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- s.awaitRevocation(ctx, revokedAt(clk.Now())) }()
		cancel()
		select {
		case err := <-done:
			if st, _ := status.FromError(err); st.Code() != codes.Canceled || !strings.Contains(st.Message(), "cluster-1") {
				t.Errorf("got %v, want Canceled naming the cluster", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("still waiting after the call ended")
		}
	})

	t.Run("a cutoff past the wait is refused as unavailable", func(t *testing.T) {
		err := s.awaitRevocation(context.Background(), revokedAt(clk.Now().Add(maxRevocationWait)))
		if st, _ := status.FromError(err); st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "retry after it") {
			t.Errorf("got %v, want Unavailable saying to retry after the cutoff", err)
		}
	})
}
