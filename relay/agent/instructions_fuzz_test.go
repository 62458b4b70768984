package agent

import (
	"context"
	"crypto"
	"crypto/x509"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/pkg/pki"
	"github.com/meshrelay/meshrelay/pkg/relaysecret"
	"github.com/meshrelay/meshrelay/pkg/trustbundle"
	relayv1 "github.com/meshrelay/meshrelay/relay/api/v1"
)

// awaitedCA is an Istio CA whose onIssued, which the streams run on a
// goroutine of its own, can be waited for.
type awaitedCA struct {
	*istioCA
	issued sync.WaitGroup
}

func (a *awaitedCA) onIssued(ctx context.Context, in *relayv1.IntermediateIssued) {
	defer a.issued.Done()
	a.istioCA.onIssued(ctx, in)
}

// instructionRig is the agent's streams as they handle one instruction
// that came on a connection to a server whose certificate the seeds' root
// issued: with trust anchors, a renewal channel and an Istio CA (leader,
// on a fake API server) that holds key for policy p1, as after the
// server's IssueIntermediate.
type instructionRig struct {
	streams  *streams
	roots    *rootSet
	on       connection
	renewNow chan string
	istio    *istioRig
	ca       *awaitedCA
}

func newInstructionRig(t *testing.T, s *instructionSeeds) *instructionRig {
	r := &instructionRig{roots: &rootSet{}, on: s.on, renewNow: make(chan string, 1), istio: newIstioRig(t)}
	r.roots.setLocal([]*x509.Certificate{s.old.Cert})
	r.istio.ca.opts.Log = logr.Discard()
	r.istio.ca.pending["p1"] = s.key
	r.ca = &awaitedCA{istioCA: r.istio.ca}
	cfg := config.DefaultAgent()
	r.streams = newStreams(streamsOptions{Config: &cfg, Roots: r.roots, RenewNow: r.renewNow, IstioCA: r.ca,
		Updates: newAgentMetrics().bundleUpdates, Log: logr.Discard()})
	return r
}

// handle hands in to the streams and waits for what it started.
func (r *instructionRig) handle(in *relayv1.Instruction) {
	if in.GetIntermediateIssued() != nil {
		r.ca.issued.Add(1)
	}
	r.streams.handle(context.Background(), in, r.on)
	r.ca.issued.Wait()
}

// cacerts returns what the Istio CA wrote, or nil.
func (r *instructionRig) cacerts(t *testing.T) *corev1.Secret {
	var sec corev1.Secret
	err := r.istio.client.Get(context.Background(), cacerts, &sec)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return &sec
}

// instructionSeeds are an Istio CA root, which also issued the relay
// server's certificate on the connection (on), the key the agent holds
// for policy p1's intermediate, the server's signed answer for it, and
// instructions to start fuzzing from.
type instructionSeeds struct {
	old, root *pki.Certified
	on        connection
	key       crypto.Signer
	signed    *relayv1.Instruction
	all       []*relayv1.Instruction
}

func newInstructionSeeds(tb testing.TB) *instructionSeeds {
	tb.Helper()
	s := &instructionSeeds{}
	for _, r := range []**pki.Certified{&s.old, &s.root} {
		root, err := pki.NewRootCA(pki.Options{CommonName: "test root", TTL: 24 * time.Hour})
		if err != nil {
			tb.Fatal(err)
		}
		*r = root
	}
	s.on = connection{server: []*x509.Certificate{serverOf(tb, s.root).Cert}}
	key, err := pki.GenerateKey(pki.ECDSAP256)
	if err != nil {
		tb.Fatal(err)
	}
	s.key = key
	csr, err := pki.NewCSR(key, pki.IstiodDNSName)
	if err != nil {
		tb.Fatal(err)
	}
	req, err := pki.DecodeCSR(csr)
	if err != nil {
		tb.Fatal(err)
	}
	issued, err := s.root.SignIstioIntermediate(req, "cluster-1", time.Hour, time.Now())
	if err != nil {
		tb.Fatal(err)
	}
	s.signed = &relayv1.Instruction{Instruction: &relayv1.Instruction_IntermediateIssued{IntermediateIssued: &relayv1.IntermediateIssued{
		Policy: "p1", CertificateChain: issued.CertPEM, RootCertificate: issued.CAPEM,
	}}}
	s.all = []*relayv1.Instruction{
		{Instruction: &relayv1.Instruction_TrustBundle{TrustBundle: &relayv1.TrustBundle{CaCertificates: s.root.CertPEM()}}},
		{Instruction: &relayv1.Instruction_TrustBundle{TrustBundle: &relayv1.TrustBundle{CaCertificates: []byte("junk")}}},
		{Instruction: &relayv1.Instruction_RenewNow{RenewNow: &relayv1.RenewNow{Reason: "root rotated"}}},
		{Instruction: &relayv1.Instruction_IssueIntermediate{IssueIntermediate: &relayv1.IssueIntermediate{Policy: "p2"}}},
		s.signed,
		{Instruction: &relayv1.Instruction_IntermediateIssued{IntermediateIssued: &relayv1.IntermediateIssued{
			Policy: "p1", CertificateChain: s.root.CertPEM(), RootCertificate: s.root.CertPEM(), AutoRestartPods: true,
		}}},
		{Instruction: &relayv1.Instruction_IntermediateIssued{IntermediateIssued: &relayv1.IntermediateIssued{
			Policy: "p2", CertificateChain: issued.CertPEM, RootCertificate: issued.CAPEM,
		}}},
	}
	return s
}

// TestTheInstructionRigInstallsOnlyWhatTheServerSigned shows that
// FuzzInstruction's rig tells the server's signed answer from the same
// answer under another policy, and from garbage: otherwise its property
// proves nothing.
func TestTheInstructionRigInstallsOnlyWhatTheServerSigned(t *testing.T) {
	s := newInstructionSeeds(t)
	for i, in := range s.all {
		r := newInstructionRig(t, s)
		r.handle(in)
		if written := r.cacerts(t) != nil; written != (in == s.signed) {
			t.Errorf("seed %d (%T): cacerts written %v, want %v", i, in.GetInstruction(), written, in == s.signed)
		}
	}
}

// FuzzInstruction decodes arbitrary bytes as an Instruction from the server
// and hands it to the agent's streams, with an Istio CA that is waiting for
// policy p1's intermediate. Properties: it never panics; the trust anchors
// change only by a trust bundle that decodes, holds only CAs and holds the
// root of the connection's server, whose roots join them; a renewal is
// asked for only by
// RenewNow; a CSR is pushed only for IssueIntermediate, under its policy;
// and istio-system/cacerts is written only for p1, with an intermediate
// for the key the agent holds that chains to the root sent with it.
func FuzzInstruction(f *testing.F) {
	s := newInstructionSeeds(f)
	old, key := s.old, s.key
	for _, in := range s.all {
		b, err := proto.Marshal(in)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var in relayv1.Instruction
		if err := proto.Unmarshal(data, &in); err != nil {
			return
		}
		r := newInstructionRig(t, s)
		r.handle(&in)

		wantRoots := []*x509.Certificate{old.Cert}
		if tb := in.GetTrustBundle(); tb != nil {
			certs, err := pki.DecodeCertificates(tb.GetCaCertificates())
			allCA := !slices.ContainsFunc(certs, func(c *x509.Certificate) bool { return !c.IsCA })
			if err == nil && allCA && slices.ContainsFunc(certs, s.root.Cert.Equal) {
				wantRoots = trustbundle.Unique(append([]*x509.Certificate{old.Cert}, certs...))
			}
		}
		if got := r.roots.Get(); !slices.EqualFunc(got, wantRoots, (*x509.Certificate).Equal) {
			t.Errorf("roots are %d certificates, want %d", len(got), len(wantRoots))
		}
		select {
		case reason := <-r.renewNow:
			if in.GetRenewNow() == nil || reason != in.GetRenewNow().GetReason() {
				t.Errorf("renewal asked for (%q) by %T", reason, in.GetInstruction())
			}
		default:
			if in.GetRenewNow() != nil {
				t.Error("RenewNow did not reach the rotator")
			}
		}
		for len(r.istio.push) > 0 {
			msg := (<-r.istio.push).GetIntermediateCsr()
			if in.GetIssueIntermediate() == nil || msg.GetPolicy() != in.GetIssueIntermediate().GetPolicy() {
				t.Errorf("pushed a CSR for policy %q after %T", msg.GetPolicy(), in.GetInstruction())
			}
		}
		sec := r.cacerts(t)
		if sec == nil {
			return
		}
		if in.GetIntermediateIssued().GetPolicy() != "p1" {
			t.Fatalf("cacerts written after %T for policy %q", in.GetInstruction(), in.GetIntermediateIssued().GetPolicy())
		}
		m, res := relaysecret.Validate(relaysecret.IstioCA, sec.Data, "", relaysecret.Context{Now: time.Now()})
		if m == nil {
			t.Fatalf("cacerts written with an unusable intermediate: %v", res.Err())
		}
		if err := pki.KeyMatchesCertificate(key, m.Cert); err != nil {
			t.Fatalf("cacerts written with an intermediate for another key: %v", err)
		}
	})
}
