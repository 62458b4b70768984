package server

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	testingclock "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/meshrelay/meshrelay/internal/scheme"
	meshv1alpha1 "github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/pkg/pki"
	relayv1 "github.com/meshrelay/meshrelay/relay/api/v1"
)

// A report from the agent with a failure is recorded once in the policy's
// status and counted once, however often the agent repeats it.
func TestAgentFailureIsRecordedOnce(t *testing.T) {
	svc := fuzzService(t)
	rep := &relayv1.IstioCAStatus{Policy: "p", Error: "secret istio-system/cacerts exists and was not written by meshrelay"}
	for range 3 {
		svc.trust.report("cluster-1", rep)
	}
	var m dto.Metric
	if err := svc.metrics.trustFailures.WithLabelValues("p", failAgent).Write(&m); err != nil {
		t.Fatal(err)
	}
	if got := m.GetCounter().GetValue(); got != 1 {
		t.Errorf("failures counted %v times, want once", got)
	}
	if n := len(svc.trust.Queue.events); n != 1 {
		t.Errorf("policy handed to the reconciler %d times, want once", n)
	}
	r := newTrustReconciler(trustReconcilerOptions{
		Client: svc.reader.(client.Client), API: svc.reader, Namespace: svc.cfg.Namespace, RelaySecrets: relaySecretsOf(svc.cfg),
		State: svc.trust.State, Results: svc.trust.Results, Queue: svc.trust.Queue,
		Metrics: svc.metrics, Clock: svc.trust.Clock, Log: svc.trust.Log,
	})
	if _, err := r.Reconcile(context.Background(), reconcile.Request{NamespacedName: types.NamespacedName{Namespace: "gloo-mesh", Name: "p"}}); err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	var p meshv1alpha1.RootTrustPolicy
	if err := svc.reader.Get(context.Background(), types.NamespacedName{Namespace: "gloo-mesh", Name: "p"}, &p); err != nil {
		t.Fatal(err)
	}
	if len(p.Status.Clusters) != 1 || p.Status.Clusters[0].Name != "cluster-1" || !strings.Contains(p.Status.Clusters[0].LastError, "agent: secret istio-system/cacerts exists") {
		t.Errorf("status.clusters = %+v", p.Status.Clusters)
	}
}

// check asks a connected cluster for a CSR once per askAgain, at once when
// the root changes, and waits longer after the agent reported a failure.
func TestCheckAsksOnceAndAgainWhenTheRootChanges(t *testing.T) {
	clk := testingclock.NewFakeClock(time.Unix(1_000_000, 0))
	conns := newConnections()
	tr := newTestTrust(&config.Server{}, conns, newMetrics(prometheus.NewRegistry()), clk)
	tr.State.setPolicy(&trustPolicy{name: "mesh", rootSHA256: "aa"})
	pull := conns.open("c1", pullStream, nil, nil)
	asks := func() int {
		n := 0
		for {
			select {
			case in := <-pull.instructions:
				if in.GetIssueIntermediate().GetPolicy() != "mesh" {
					t.Fatalf("instruction %v", in)
				}
				n++
			default:
				return n
			}
		}
	}
	tr.check("c1")
	if n := asks(); n != 0 {
		t.Fatalf("asked %d times before the agent reported", n)
	}
	tr.State.report("c1", &relayv1.IstioCAStatus{})
	tr.check("c1")
	tr.check("c1")
	if n := asks(); n != 1 {
		t.Fatalf("asked %d times for a missing cacerts, want once", n)
	}
	clk.Step(askAgain - time.Second)
	tr.check("c1")
	if n := asks(); n != 0 {
		t.Fatalf("asked again %d times before askAgain", n)
	}
	tr.State.setPolicy(&trustPolicy{name: "mesh", rootSHA256: "bb"})
	tr.check("c1")
	if n := asks(); n != 1 {
		t.Fatalf("asked %d times after the root changed, want at once", n)
	}
	tr.State.report("c1", &relayv1.IstioCAStatus{Policy: "mesh", Error: "forbidden"})
	clk.Step(askAgain)
	tr.check("c1")
	if n := asks(); n != 0 {
		t.Fatalf("asked %d times within askAfterFailure of a failure", n)
	}
	clk.Step(askAfterFailure)
	tr.check("c1")
	if n := asks(); n != 1 {
		t.Fatalf("asked %d times after askAfterFailure, want once", n)
	}
}

// What arrives on a push stream is handled on its receive loop with no
// write to the API server: the handler's only side effects are the answer
// on the pull stream, the result pending for the policy's status and the
// policy handed to the reconciler.
func TestPushStreamHandlingWritesNothingToTheAPIServer(t *testing.T) {
	key, err := pki.GenerateKey(pki.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	istioCSR, err := pki.NewCSR(key, pki.IstiodDNSName)
	if err != nil {
		t.Fatal(err)
	}
	csr := func(policy string, csr []byte) *relayv1.PushMessage {
		return &relayv1.PushMessage{Message: &relayv1.PushMessage_IntermediateCsr{IntermediateCsr: &relayv1.IntermediateCSR{Policy: policy, Csr: csr}}}
	}
	for _, tc := range []struct {
		name string
		msg  *relayv1.PushMessage
		// answered says whether the pull stream gets the intermediate;
		// pending is the kind of result left for policy p, if any.
		answered bool
		pending  []resultKind
		// asked is the policy the server asked cluster-1 for a CSR under.
		asked string
	}{
		{"a good CSR is signed, answered and left for the status", csr("p", istioCSR), true, []resultKind{resultIssued}, "p"},
		{"a CSR that does not decode is refused and left for the status", csr("p", []byte("junk")), false, []resultKind{resultFailed}, "p"},
		{"a CSR under a policy that does not serve the cluster is refused, with nothing to record", csr("other", istioCSR), false, nil, "p"},
		{"a good CSR the server did not ask for is not signed, with nothing to record", csr("p", istioCSR), false, nil, ""},
		{"an agent's failure to install is left for the status", &relayv1.PushMessage{Message: &relayv1.PushMessage_Status{Status: &relayv1.AgentStatus{
			IstioCa: &relayv1.IstioCAStatus{Policy: "p", Error: "forbidden"},
		}}}, false, []resultKind{resultFailed}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			svc := serviceWith(t, &config.Server{Namespace: "gloo-mesh"}, writesFailTest(t))
			pull := svc.conns.open("cluster-1", pullStream, nil, nil)
			if tc.asked != "" {
				svc.trust.State.awaitCSR("cluster-1", tc.asked)
			}
			svc.handlePush("cluster-1", tc.msg)
			answered := false
			for len(pull.instructions) > 0 {
				answered = answered || (<-pull.instructions).GetIntermediateIssued() != nil
			}
			if answered != tc.answered {
				t.Errorf("pull stream answered: %v, want %v", answered, tc.answered)
			}
			var kinds []resultKind
			for _, r := range svc.trust.Results.take("p") {
				kinds = append(kinds, r.kind)
			}
			if !slices.Equal(kinds, tc.pending) {
				t.Errorf("results pending for p: %v, want %v", kinds, tc.pending)
			}
			if others := svc.trust.Results.policies(); len(others) != 0 {
				t.Errorf("results pending for other policies %v", others)
			}
			var queued []string
			for len(svc.trust.Queue.events) > 0 {
				queued = append(queued, (<-svc.trust.Queue.events).Object.GetName())
			}
			if want := len(tc.pending); len(queued) != want || (want > 0 && queued[0] != "p") {
				t.Errorf("policies handed to the reconciler: %v, want p %d times", queued, want)
			}
		})
	}
}

// writesFailTest returns an in-memory client holding KubernetesCluster
// cluster-1 and RootTrustPolicy p, whose writes of any kind fail t.
func writesFailTest(t *testing.T) client.Client {
	s, _ := scheme.Scheme()
	policy := &meshv1alpha1.RootTrustPolicy{}
	policy.Namespace, policy.Name = "gloo-mesh", "p"
	cluster := &meshv1alpha1.KubernetesCluster{}
	cluster.Namespace, cluster.Name = "gloo-mesh", "cluster-1"
	write := func(what string) error {
		t.Errorf("API write (%s) while handling a push stream message", what)
		return nil
	}
	return interceptor.NewClient(fake.NewClientBuilder().WithScheme(s).WithObjects(policy, cluster).WithStatusSubresource(policy).Build(), interceptor.Funcs{
		Create: func(context.Context, client.WithWatch, client.Object, ...client.CreateOption) error {
			return write("create")
		},
		Update: func(context.Context, client.WithWatch, client.Object, ...client.UpdateOption) error {
			return write("update")
		},
		Patch: func(context.Context, client.WithWatch, client.Object, client.Patch, ...client.PatchOption) error {
			return write("patch")
		},
		Apply: func(context.Context, client.WithWatch, runtime.ApplyConfiguration, ...client.ApplyOption) error {
			return write("apply")
		},
		Delete: func(context.Context, client.WithWatch, client.Object, ...client.DeleteOption) error {
			return write("delete")
		},
		DeleteAllOf: func(context.Context, client.WithWatch, client.Object, ...client.DeleteAllOfOption) error {
			return write("deleteAllOf")
		},
		SubResourceCreate: func(context.Context, client.Client, string, client.Object, client.Object, ...client.SubResourceCreateOption) error {
			return write("subresource create")
		},
		SubResourceUpdate: func(context.Context, client.Client, string, client.Object, ...client.SubResourceUpdateOption) error {
			return write("status update")
		},
		SubResourcePatch: func(context.Context, client.Client, string, client.Object, client.Patch, ...client.SubResourcePatchOption) error {
			return write("status patch")
		},
		SubResourceApply: func(context.Context, client.Client, string, runtime.ApplyConfiguration, ...client.SubResourceApplyOption) error {
			return write("status apply")
		},
	})
}

// An intermediate CSR is signed only when this server asked the cluster for
// one under that policy, and once per ask: an agent that sends CSRs on its
// own, or sends the answer again, gets nothing signed.
func TestAnIntermediateCSRIsSignedOnlyWhenAskedAndOncePerAsk(t *testing.T) {
	key, err := pki.GenerateKey(pki.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	istioCSR, err := pki.NewCSR(key, pki.IstiodDNSName)
	if err != nil {
		t.Fatal(err)
	}
	msg := &relayv1.PushMessage{Message: &relayv1.PushMessage_IntermediateCsr{IntermediateCsr: &relayv1.IntermediateCSR{Policy: "p", Csr: istioCSR}}}
	svc := serviceWith(t, &config.Server{Namespace: "gloo-mesh"}, writesFailTest(t))
	pull := svc.conns.open("cluster-1", pullStream, nil, nil)
	received := func() (asks, issued int) {
		for len(pull.instructions) > 0 {
			in := <-pull.instructions
			if in.GetIssueIntermediate() != nil {
				asks++
			}
			if in.GetIntermediateIssued() != nil {
				issued++
			}
		}
		return asks, issued
	}
	svc.handlePush("cluster-1", msg)
	if _, issued := received(); issued != 0 {
		t.Fatalf("a CSR sent before any ask was signed %d times, want never", issued)
	}
	svc.trust.State.report("cluster-1", &relayv1.IstioCAStatus{})
	svc.trust.check("cluster-1")
	if asks, _ := received(); asks != 1 {
		t.Fatalf("the server asked %d times for a missing cacerts, want once", asks)
	}
	for i := range 3 {
		svc.handlePush("cluster-1", msg)
		want := 0
		if i == 0 {
			want = 1
		}
		if _, issued := received(); issued != want {
			t.Errorf("CSR %d after one ask: signed %d times, want %d", i+1, issued, want)
		}
	}
	var m dto.Metric
	if err := svc.metrics.trustIssued.WithLabelValues("p").Write(&m); err != nil || m.GetCounter().GetValue() != 1 {
		t.Errorf("intermediates counted as issued under p: %v (%v), want 1", m.GetCounter().GetValue(), err)
	}
}
