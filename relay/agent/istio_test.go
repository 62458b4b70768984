package agent

import (
	"context"
	"crypto/x509"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	appsv1 "k8s.io/api/apps/v1"
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
		Expiry: r.metrics.istioExpiry, RootExpiry: r.metrics.istioRootExpiry, Failures: r.metrics.istioFailures,
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

// installUnder has the Istio CA ask for, and install, an intermediate
// signed by root under policy p1, with the previous roots the server names.
func (r *istioRig) installUnder(t *testing.T, root *pki.Certified, previous ...*pki.Certified) {
	t.Helper()
	r.ca.onIssue(&relayv1.IssueIntermediate{Policy: "p1"})
	in := r.sign(t, root)
	for _, p := range previous {
		in.PreviousRootSha256 = append(in.PreviousRootSha256, pki.Fingerprint(p.Cert))
	}
	r.ca.onIssued(context.Background(), in)
	r.ca.refresh(context.Background())
	if st := r.ca.status(); st == nil || st.GetError() != "" || st.GetNotAfter() == 0 {
		t.Fatalf("install failed: status %v", st)
	}
}

// cacerts reads cacerts: its intermediate and the roots of root-cert.pem.
func (r *istioRig) cacerts(t *testing.T) (ca *x509.Certificate, roots []*x509.Certificate, data map[string][]byte) {
	t.Helper()
	var sec corev1.Secret
	if err := r.client.Get(context.Background(), cacerts, &sec); err != nil {
		t.Fatalf("cacerts: %v", err)
	}
	ca, err := pki.DecodeCertificate(sec.Data[pki.IstioCACertKey])
	if err != nil {
		t.Fatalf("ca-cert.pem: %v", err)
	}
	if roots, err = pki.DecodeCertificates(sec.Data[pki.IstioRootCertKey]); err != nil {
		t.Fatalf("root-cert.pem: %v", err)
	}
	return ca, roots, sec.Data
}

// fingerprints are the fingerprints of certs, in order.
func fingerprints(certs ...*x509.Certificate) []string {
	var out []string
	for _, c := range certs {
		out = append(out, pki.Fingerprint(c))
	}
	return out
}

func TestIstioCAKeepsTheReplacedRootsTheServerNames(t *testing.T) {
	oldRoot, newRoot, stranger := newRoot(t), newRoot(t), newRoot(t)
	for _, tc := range []struct {
		name     string
		previous []*pki.Certified
		want     []*x509.Certificate
	}{
		{"an intermediate under a new root keeps the replaced root after it", []*pki.Certified{oldRoot}, []*x509.Certificate{newRoot.Cert, oldRoot.Cert}},
		{"with no previous roots named, root-cert.pem is the new root alone", nil, []*x509.Certificate{newRoot.Cert}},
		{"a named root that root-cert.pem does not hold is not added", []*pki.Certified{stranger}, []*x509.Certificate{newRoot.Cert}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newIstioRig(t)
			r.installUnder(t, oldRoot)
			r.installUnder(t, newRoot, tc.previous...)
			ca, roots, _ := r.cacerts(t)
			if got, want := fingerprints(roots...), fingerprints(tc.want...); !slices.Equal(got, want) {
				t.Errorf("root-cert.pem holds %v, want %v", got, want)
			}
			if _, err := pki.VerifyChain(ca, nil, []*x509.Certificate{newRoot.Cert}, pki.RoleSigningCA, time.Now()); err != nil {
				t.Errorf("the intermediate does not chain to the new root: %v", err)
			}
			r.ca.refresh(context.Background())
			st := r.ca.status()
			if st.GetRootSha256() != pki.Fingerprint(newRoot.Cert) || !slices.Equal(st.GetRootCertSha256(), fingerprints(tc.want...)) {
				t.Errorf("reported root %s and root-cert.pem %v, want the new root first of %v", st.GetRootSha256(), st.GetRootCertSha256(), fingerprints(tc.want...))
			}
			series := gaugeSeries(t, r.metrics.istioRootExpiry)
			for _, c := range tc.want {
				if got := series[pki.Fingerprint(c)]; got != float64(c.NotAfter.Unix()) {
					t.Errorf("root expiry of %s = %v, want %d", c.Subject.CommonName, got, c.NotAfter.Unix())
				}
			}
			if len(series) != len(tc.want) {
				t.Errorf("root expiry series %v, want %d", series, len(tc.want))
			}
		})
	}
}

func TestIstioCARewritesRootCertWithoutItsIntermediate(t *testing.T) {
	oldRoot, newRoot := newRoot(t), newRoot(t)
	ctx := context.Background()
	istiod := func() *appsv1.Deployment {
		labels := map[string]string{"app": "istiod"}
		return &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Namespace: "istio-system", Name: "istiod", Labels: labels},
			Spec:       appsv1.DeploymentSpec{Selector: &metav1.LabelSelector{MatchLabels: labels}, Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}}},
		}
	}
	drop := func(policy string, restart bool) *relayv1.IntermediateIssued {
		return &relayv1.IntermediateIssued{Policy: policy, RootCertificate: newRoot.CAPEM(), AutoRestartPods: restart}
	}
	overlapping := func(t *testing.T) *istioRig {
		r := newIstioRig(t, istiod())
		r.installUnder(t, oldRoot)
		r.installUnder(t, newRoot, oldRoot)
		return r
	}
	t.Run("the replaced root leaves; the intermediate and its key stay; istiod restarts for the new revision", func(t *testing.T) {
		r := overlapping(t)
		ca, roots, before := r.cacerts(t)
		r.ca.onIssued(ctx, drop("p1", true))
		after, afterRoots, data := r.cacerts(t)
		if !after.Equal(ca) || string(data[pki.IstioCAKeyKey]) != string(before[pki.IstioCAKeyKey]) || string(data[pki.IstioCertChainKey]) != string(before[pki.IstioCertChainKey]) {
			t.Error("the intermediate, its key or its chain changed")
		}
		if got := fingerprints(afterRoots...); !slices.Equal(got, fingerprints(newRoot.Cert)) {
			t.Errorf("root-cert.pem holds %v, want the new root alone (before: %v)", got, fingerprints(roots...))
		}
		if st := r.ca.status(); st == nil || st.GetError() != "" {
			t.Errorf("status %v, want no failure", st)
		}
		var d appsv1.Deployment
		if err := r.client.Get(ctx, types.NamespacedName{Namespace: "istio-system", Name: "istiod"}, &d); err != nil {
			t.Fatal(err)
		}
		if got, want := d.Spec.Template.Annotations[meshv1alpha1.CACertsRevisionAnnotation], revision(after, afterRoots); got != want || want != pki.Fingerprint(after)[:16] {
			t.Errorf("istiod restarted for revision %q, want %q, the intermediate's alone", got, want)
		}
	})
	for _, tc := range []struct {
		name string
		rig  func(t *testing.T) *istioRig
		in   *relayv1.IntermediateIssued
	}{
		{"another replica leaves it to the leader", func(t *testing.T) *istioRig {
			r := overlapping(t)
			r.leading = false
			return r
		}, drop("p1", false)},
		{"a cacerts written under another policy is left alone", overlapping, drop("p2", false)},
		{"an intermediate still under the replaced root keeps its root", func(t *testing.T) *istioRig {
			r := newIstioRig(t)
			r.installUnder(t, oldRoot)
			return r
		}, drop("p1", false)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.rig(t)
			_, _, before := r.cacerts(t)
			r.ca.onIssued(ctx, tc.in)
			if _, _, after := r.cacerts(t); string(after[pki.IstioRootCertKey]) != string(before[pki.IstioRootCertKey]) {
				t.Error("root-cert.pem was rewritten")
			}
			if st := r.ca.status(); st == nil || st.GetError() != "" {
				t.Errorf("status %v, want no failure", st)
			}
		})
	}
	t.Run("a root that does not decode is a failure", func(t *testing.T) {
		r := overlapping(t)
		r.ca.onIssued(ctx, &relayv1.IntermediateIssued{Policy: "p1", RootCertificate: []byte("junk")})
		if st := r.ca.status(); !strings.Contains(st.GetError(), "root from the server") {
			t.Errorf("status %v, want the failure", st)
		}
	})
}

func TestRevisionNamesTheIntermediateAndTheRootsBesideItsOwn(t *testing.T) {
	oldRoot, newRoot := newRoot(t), newRoot(t)
	ca := newRoot.Cert // any certificate stands for the intermediate
	single := revision(ca, []*x509.Certificate{newRoot.Cert})
	both := revision(ca, []*x509.Certificate{newRoot.Cert, oldRoot.Cert})
	if single != pki.Fingerprint(ca)[:16] {
		t.Errorf("with one root, revision %q, want the intermediate's 16 hex digits", single)
	}
	if !strings.HasPrefix(both, single+"-") || len(both) != len(single)+9 || both == revision(ca, []*x509.Certificate{oldRoot.Cert, newRoot.Cert}) {
		t.Errorf("with two roots, revision %q: want %s- and 8 hex digits that depend on the roots and their order", both, single)
	}
}

// gaugeSeries returns the values of g's series by their one label's value.
func gaugeSeries(t *testing.T, g *prometheus.GaugeVec) map[string]float64 {
	t.Helper()
	ch := make(chan prometheus.Metric, 16)
	g.Collect(ch)
	close(ch)
	out := map[string]float64{}
	for m := range ch {
		var d dto.Metric
		if err := m.Write(&d); err != nil {
			t.Fatal(err)
		}
		out[d.GetLabel()[0].GetValue()] = d.GetGauge().GetValue()
	}
	return out
}
