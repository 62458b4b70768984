package agent

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	meshv1alpha1 "github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
	"github.com/meshrelay/meshrelay/pkg/pki"
	relayv1 "github.com/meshrelay/meshrelay/relay/api/v1"
)

var cacerts = types.NamespacedName{Namespace: "istio-system", Name: "cacerts"}

// istioRig is an Istio CA on a fake API server.
type istioRig struct {
	ca      *istioCA
	client  client.Client
	push    chan *relayv1.PushMessage
	leading bool
	changes int
	metrics *agentMetrics
}

func newIstioRig(t *testing.T, objs ...client.Object) *istioRig {
	r := &istioRig{push: make(chan *relayv1.PushMessage, 1), leading: true, metrics: newAgentMetrics()}
	r.client = fake.NewClientBuilder().WithObjects(objs...).Build()
	r.ca = newIstioCA(istioCAOptions{
		Secret: cacerts, Cache: r.client, API: r.client, Writer: r.client,
		Leading: func() bool { return r.leading }, Push: r.push, StatusChanged: func() { r.changes++ },
		Expiry: r.metrics.istioExpiry, Failures: r.metrics.istioFailures,
		Clock: clocktesting.NewFakePassiveClock(time.Now()), Log: testr.New(t),
	})
	return r
}

// sign answers the CSR the Istio CA pushed, as the server does.
func (r *istioRig) sign(t *testing.T, root *pki.Certified) *relayv1.IntermediateIssued {
	t.Helper()
	msg := <-r.push
	in := msg.GetIntermediateCsr()
	csr, err := pki.DecodeCSR(in.GetCsr())
	if err != nil {
		t.Fatal(err)
	}
	issued, err := root.SignIstioIntermediate(csr, "cluster-1", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return &relayv1.IntermediateIssued{Policy: in.GetPolicy(), CertificateChain: issued.CertPEM, RootCertificate: issued.CAPEM}
}

func newRoot(t *testing.T) *pki.Certified {
	t.Helper()
	root, err := pki.NewRootCA(pki.Options{CommonName: "test root", TTL: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	return root
}

func TestIstioCAMakesItsKeyOnTheLeaderOnly(t *testing.T) {
	for _, tc := range []struct {
		name     string
		leading  bool
		wantCSRs int
	}{
		{"the leader makes a key and pushes only its CSR", true, 1},
		{"another replica leaves the intermediate to the leader", false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newIstioRig(t)
			r.leading = tc.leading
			r.ca.onIssue(&relayv1.IssueIntermediate{Policy: "p1"})
			if len(r.push) != tc.wantCSRs {
				t.Fatalf("%d messages pushed, want %d", len(r.push), tc.wantCSRs)
			}
			if tc.wantCSRs > 0 {
				if in := (<-r.push).GetIntermediateCsr(); in.GetPolicy() != "p1" || len(in.GetCsr()) == 0 {
					t.Errorf("pushed %v, want a CSR for policy p1", in)
				}
			}
		})
	}
	t.Run("a full push queue drops the CSR instead of blocking", func(t *testing.T) {
		r := newIstioRig(t)
		r.push <- &relayv1.PushMessage{}
		r.ca.onIssue(&relayv1.IssueIntermediate{Policy: "p1"})
		if len(r.push) != 1 {
			t.Errorf("%d messages queued, want the one that was there", len(r.push))
		}
	})
}

func TestIstioCAInstallsWhatTheServerSigns(t *testing.T) {
	root := newRoot(t)
	ctx := context.Background()
	t.Run("cacerts is created with the policy, reported, and the status refreshed", func(t *testing.T) {
		r := newIstioRig(t)
		r.ca.refresh(ctx) // no cacerts yet
		r.ca.onIssue(&relayv1.IssueIntermediate{Policy: "p1"})
		r.ca.onIssued(ctx, r.sign(t, root))
		var sec corev1.Secret
		if err := r.client.Get(ctx, cacerts, &sec); err != nil {
			t.Fatalf("cacerts: %v", err)
		}
		if sec.Annotations[meshv1alpha1.RootTrustPolicyKey] != "p1" || len(sec.Data[pki.IstioCACertKey]) == 0 {
			t.Errorf("cacerts annotations %v, keys %d: want policy p1 and the intermediate", sec.Annotations, len(sec.Data))
		}
		if r.changes != 1 {
			t.Errorf("status changed %d times, want 1", r.changes)
		}
		if !r.ca.refresh(ctx) {
			t.Error("refresh saw no change after the install")
		}
		if st := r.ca.status(); st.GetPolicy() != "p1" || st.GetNotAfter() == 0 || st.GetError() != "" {
			t.Errorf("status %v, want policy p1 with an expiry and no error", st)
		}
	})
	t.Run("a cacerts meshrelay did not write is left alone and the failure reported", func(t *testing.T) {
		plugIn := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: cacerts.Namespace, Name: cacerts.Name}, Data: map[string][]byte{"ca-cert.pem": []byte("theirs")}}
		r := newIstioRig(t, plugIn)
		r.ca.refresh(ctx)
		r.ca.onIssue(&relayv1.IssueIntermediate{Policy: "p1"})
		r.ca.onIssued(ctx, r.sign(t, root))
		var sec corev1.Secret
		if err := r.client.Get(ctx, cacerts, &sec); err != nil || string(sec.Data["ca-cert.pem"]) != "theirs" {
			t.Errorf("cacerts was replaced (%v)", err)
		}
		if st := r.ca.status(); st.GetPolicy() != "p1" || !strings.Contains(st.GetError(), "was not written by meshrelay") {
			t.Errorf("status %v, want the failure for policy p1", st)
		}
		if f := counter(t, r.metrics.istioFailures); f != 1 {
			t.Errorf("failures = %v, want 1", f)
		}
	})
	t.Run("a certificate for another replica's key is ignored", func(t *testing.T) {
		other := newIstioRig(t)
		other.ca.onIssue(&relayv1.IssueIntermediate{Policy: "p1"})
		r := newIstioRig(t)
		r.ca.onIssue(&relayv1.IssueIntermediate{Policy: "p1"})
		<-r.push
		r.ca.onIssued(ctx, other.sign(t, root))
		if err := r.client.Get(ctx, cacerts, &corev1.Secret{}); err == nil {
			t.Error("cacerts was written with another replica's certificate")
		}
		if f := counter(t, r.metrics.istioFailures); f != 0 {
			t.Errorf("failures = %v, want 0", f)
		}
	})
}
