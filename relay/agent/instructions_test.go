package agent

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"slices"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"

	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/pkg/pki"
	"github.com/meshrelay/meshrelay/pkg/trustbundle"
	relayv1 "github.com/meshrelay/meshrelay/relay/api/v1"
)

// newTestRoot makes a root CA named name.
func newTestRoot(t testing.TB, name string) *pki.Certified {
	t.Helper()
	root, err := pki.NewRootCA(pki.Options{CommonName: name, TTL: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// serverOf issues a relay server certificate for the default authority
// from ca.
func serverOf(t testing.TB, ca *pki.Certified) *pki.Certified {
	t.Helper()
	c, err := ca.IssueServer(pki.Options{DNSNames: []string{config.DefaultAuthority}, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func bundleInstruction(pem []byte) *relayv1.Instruction {
	return &relayv1.Instruction{Instruction: &relayv1.Instruction_TrustBundle{TrustBundle: &relayv1.TrustBundle{CaCertificates: pem}}}
}

func TestStreamsActOnInstructions(t *testing.T) {
	old, next, other := newTestRoot(t, "old"), newTestRoot(t, "next"), newTestRoot(t, "other")
	// The connection's server certificate comes from an intermediate under
	// the old root, as relay-server's does.
	signing, err := old.NewIntermediateCA(pki.Options{CommonName: "signing", TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	srv := serverOf(t, signing)
	onServer := connection{server: []*x509.Certificate{srv.Cert, signing.Cert}}
	leafCert := leaf(7, t0, time.Hour)
	for _, tc := range []struct {
		name string
		in   *relayv1.Instruction
		on   connection
		// wantRenew is the reason passed to the rotator, if any.
		wantRenew string
		wantRoots []*pki.Certified
		// wantResult is the trust bundle counter that counts it, if any.
		wantResult string
	}{
		{name: "a renewal request reaches the rotator with its reason",
			in:        &relayv1.Instruction{Instruction: &relayv1.Instruction_RenewNow{RenewNow: &relayv1.RenewNow{Reason: "root rotated"}}},
			on:        onServer,
			wantRenew: "root rotated", wantRoots: []*pki.Certified{old}},
		{name: "a trust bundle holding the root of the server it came from joins the anchors at once",
			in: bundleInstruction(pki.EncodeCertificates(old.Cert, next.Cert)), on: onServer,
			wantRoots: []*pki.Certified{old, next}, wantResult: "accepted"},
		{name: "a trust bundle without the server's root is refused",
			in: bundleInstruction(pki.EncodeCertificates(next.Cert, other.Cert)), on: onServer,
			wantRoots: []*pki.Certified{old}, wantResult: "refused"},
		{name: "a trust bundle that does not decode is refused",
			in: bundleInstruction([]byte("junk")), on: onServer,
			wantRoots: []*pki.Certified{old}, wantResult: "refused"},
		{name: "a trust bundle holding a certificate that is not a CA is refused",
			in: bundleInstruction(pki.EncodeCertificates(old.Cert, srv.Cert)), on: onServer,
			wantRoots: []*pki.Certified{old}, wantResult: "refused"},
		{name: "a trust bundle on a connection without a server certificate is refused",
			in: bundleInstruction(pki.EncodeCertificates(old.Cert)), on: connection{},
			wantRoots: []*pki.Certified{old}, wantResult: "refused"},
		{name: "an Istio intermediate asked of an agent without federated trust is ignored",
			in: &relayv1.Instruction{Instruction: &relayv1.Instruction_IssueIntermediate{IssueIntermediate: &relayv1.IssueIntermediate{Policy: "p1"}}}, on: onServer,
			wantRoots: []*pki.Certified{old}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			renewNow := make(chan string, 1)
			roots := &rootSet{}
			roots.setLocal([]*x509.Certificate{old.Cert})
			m := newAgentMetrics()
			cfg := config.DefaultAgent()
			s := newStreams(streamsOptions{Config: &cfg, Roots: roots, RenewNow: renewNow, Updates: m.bundleUpdates, Log: testr.New(t)})
			s.handle(context.Background(), tc.in, tc.on)
			select {
			case got := <-renewNow:
				if got != tc.wantRenew {
					t.Errorf("renewal requested for %q, want %q", got, tc.wantRenew)
				}
			default:
				if tc.wantRenew != "" {
					t.Errorf("no renewal requested, want one for %q", tc.wantRenew)
				}
			}
			var want []*x509.Certificate
			for _, r := range tc.wantRoots {
				want = append(want, r.Cert)
			}
			if got := roots.Get(); !slices.EqualFunc(got, want, (*x509.Certificate).Equal) {
				t.Errorf("anchors are %d certificates, want %d", len(got), len(want))
			}
			for _, result := range []string{"accepted", "refused"} {
				want := 0.0
				if result == tc.wantResult {
					want = 1
				}
				if got := counter(t, m.bundleUpdates.WithLabelValues(result)); got != want {
					t.Errorf("trust bundle updates %s = %v, want %v", result, got, want)
				}
			}
		})
	}

	t.Run("a renewal time is kept for the certificate in use", func(t *testing.T) {
		p := NewProvider()
		p.Set(leafCert)
		at := newRenewAt()
		s := newStreams(streamsOptions{Provider: p, RenewAt: at, Log: testr.New(t)})
		s.handle(context.Background(), &relayv1.Instruction{Instruction: &relayv1.Instruction_RenewAt{RenewAt: &relayv1.RenewAt{At: t0.Unix(), Reason: "spread"}}}, onServer)
		when, reason, ok := at.forCert(leafCert.Leaf.SerialNumber.String())
		if !ok || !when.Equal(t0) || reason != "spread" {
			t.Errorf("renewal time %v %q %v, want %v \"spread\"", when, reason, ok, t0)
		}
		select {
		case <-at.wake:
		default:
			t.Error("the rotator was not woken")
		}
		if _, _, ok := at.forCert("another"); ok {
			t.Error("the renewal time applies to another certificate")
		}
	})
}

func TestStreamsDropARenewalRequestWhileOneIsPending(t *testing.T) {
	renewNow := make(chan string, 1)
	s := newStreams(streamsOptions{RenewNow: renewNow, Log: testr.New(t)})
	for _, reason := range []string{"first", "second"} {
		s.handle(context.Background(), &relayv1.Instruction{Instruction: &relayv1.Instruction_RenewNow{RenewNow: &relayv1.RenewNow{Reason: reason}}}, connection{})
	}
	if got := <-renewNow; got != "first" {
		t.Errorf("pending request %q, want first", got)
	}
}

func TestStreamsStatusReportsTheCertificateAndTheIstioCA(t *testing.T) {
	p := NewProvider()
	cert := leaf(1, t0, time.Hour)
	p.Set(cert)
	r := newIstioRig(t)
	r.ca.refresh(context.Background())
	s := newStreams(streamsOptions{Replica: "agent-0", Provider: p, IstioCA: r.ca})
	st := s.status().GetStatus()
	if st.GetReplica() != "agent-0" || st.GetClientCertificateNotAfter() != cert.Leaf.NotAfter.Unix() || st.GetIstioCa() == nil {
		t.Errorf("status %v, want replica agent-0, the certificate's NotAfter and the Istio CA", st)
	}
}

// TestAReplicaAcknowledgesABundleOnceItsClusterKeepsIt: a replica
// acknowledges the bundle the server pushed, by the SHA-256 of its exact
// bytes, once the roots kept in its cluster are the bundle's (in any order
// or encoding), or once the leader wrote it; not before, and an older
// bundle written late does not replace the acknowledgement of a newer one.
func TestAReplicaAcknowledgesABundleOnceItsClusterKeepsIt(t *testing.T) {
	a, b := newTestRoot(t, "a"), newTestRoot(t, "b")
	bundle := func(pem []byte, roots ...*pki.Certified) *pushedBundle {
		var certs []*x509.Certificate
		for _, r := range roots {
			certs = append(certs, r.Cert)
		}
		sum := sha256.Sum256(pem)
		return &pushedBundle{pem: pem, sha: hex.EncodeToString(sum[:]), roots: certs, fingerprint: trustbundle.Fingerprint(certs)}
	}
	ab := bundle(append([]byte("# roots\n"), pki.EncodeCertificates(a.Cert, b.Cert)...), a, b)
	onlyB := bundle(pki.EncodeCertificates(b.Cert), b)
	statuses := 0
	tb := newTrustBundles(func() { statuses++ })

	tb.observe(trustbundle.Fingerprint([]*x509.Certificate{a.Cert}))
	tb.offer(ab)
	if got := tb.acknowledged(); got != "" {
		t.Fatalf("acknowledged %s while the cluster keeps root a alone", got)
	}
	tb.observe(trustbundle.Fingerprint([]*x509.Certificate{b.Cert, a.Cert}))
	if got := tb.acknowledged(); got != ab.sha || statuses != 1 {
		t.Fatalf("acknowledged %q after %d statuses, want %s once the cluster keeps b and a", got, statuses, ab.sha)
	}
	tb.offer(onlyB)
	if got := tb.acknowledged(); got != ab.sha {
		t.Errorf("acknowledged %s before the new bundle was kept", got)
	}
	tb.written(ab.sha)
	if got := tb.acknowledged(); got != ab.sha {
		t.Errorf("an older bundle written late moved the acknowledgement to %s", got)
	}
	tb.written(onlyB.sha)
	if got := tb.acknowledged(); got != onlyB.sha || statuses != 2 {
		t.Errorf("acknowledged %q after %d statuses, want %s once the leader wrote it", got, statuses, onlyB.sha)
	}
	tb.offer(onlyB)
	if statuses != 2 {
		t.Errorf("the same bundle again asked for %d statuses, want none", statuses-2)
	}
}
