package agent

import (
	"context"
	"crypto/x509"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"

	"github.com/meshrelay/meshrelay/pkg/pki"
	relayv1 "github.com/meshrelay/meshrelay/relay/api/v1"
)

func TestStreamsActOnInstructions(t *testing.T) {
	root := newRoot(t)
	old := newRoot(t)
	for _, tc := range []struct {
		name string
		in   *relayv1.Instruction
		// wantRenew is the reason passed to the rotator, if any.
		wantRenew string
		wantRoot  *pki.Certified
	}{
		{"a renewal request reaches the rotator with its reason",
			&relayv1.Instruction{Instruction: &relayv1.Instruction_RenewNow{RenewNow: &relayv1.RenewNow{Reason: "root rotated"}}}, "root rotated", old},
		{"a trust bundle replaces the roots",
			&relayv1.Instruction{Instruction: &relayv1.Instruction_TrustBundle{TrustBundle: &relayv1.TrustBundle{CaCertificates: root.CertPEM()}}}, "", root},
		{"a bad trust bundle is ignored",
			&relayv1.Instruction{Instruction: &relayv1.Instruction_TrustBundle{TrustBundle: &relayv1.TrustBundle{CaCertificates: []byte("junk")}}}, "", old},
		{"an Istio intermediate asked of an agent without federated trust is ignored",
			&relayv1.Instruction{Instruction: &relayv1.Instruction_IssueIntermediate{IssueIntermediate: &relayv1.IssueIntermediate{Policy: "p1"}}}, "", old},
	} {
		t.Run(tc.name, func(t *testing.T) {
			renewNow := make(chan string, 1)
			roots := &rootSet{}
			roots.Set([]*x509.Certificate{old.Cert})
			s := newStreams(streamsOptions{Roots: roots, RenewNow: renewNow, Log: testr.New(t)})
			s.handle(context.Background(), tc.in)
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
			if got := roots.Get(); len(got) != 1 || !got[0].Equal(tc.wantRoot.Cert) {
				t.Errorf("roots are %v, want %s", got, tc.wantRoot.Cert.Subject)
			}
		})
	}
}

func TestStreamsDropARenewalRequestWhileOneIsPending(t *testing.T) {
	renewNow := make(chan string, 1)
	s := newStreams(streamsOptions{RenewNow: renewNow, Log: testr.New(t)})
	for _, reason := range []string{"first", "second"} {
		s.handle(context.Background(), &relayv1.Instruction{Instruction: &relayv1.Instruction_RenewNow{RenewNow: &relayv1.RenewNow{Reason: reason}}})
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
