package server

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	meshv1alpha1 "github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/pkg/pki"
	relayv1 "github.com/meshrelay/meshrelay/relay/api/v1"
)

func TestRenewalReason(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	p := &trustPolicy{name: "mesh", rootSHA256: "aa"}
	ok := func(notBefore, notAfter int64) *relayv1.IstioCAStatus {
		return &relayv1.IstioCAStatus{Policy: "mesh", RootSha256: "aa", NotBefore: notBefore, NotAfter: notAfter}
	}
	for _, tc := range []struct {
		name string
		rep  *relayv1.IstioCAStatus
		want string
	}{
		{"no cacerts", &relayv1.IstioCAStatus{}, "no intermediate"},
		{"another policy's cacerts", &relayv1.IstioCAStatus{Policy: "other", RootSha256: "aa", NotAfter: now.Unix() + 1000}, `it says "other"`},
		{"a cacerts nobody annotated", &relayv1.IstioCAStatus{RootSha256: "aa", NotAfter: now.Unix() + 1000}, `it says ""`},
		{"another root", &relayv1.IstioCAStatus{Policy: "mesh", RootSha256: "bb", NotAfter: now.Unix() + 1000}, "root changed"},
		// Lifetime 1000 s: renewal when 100 s are left.
		{"well inside its lifetime", ok(now.Unix()-500, now.Unix()+500), ""},
		{"one second before the renewal time", ok(now.Unix()-899, now.Unix()+101), ""},
		{"at the renewal time", ok(now.Unix()-900, now.Unix()+100), "renewal window"},
		{"expired", ok(now.Unix()-2000, now.Unix()-1000), "renewal window"},
		{"a validity that ends before it starts", ok(now.Unix()+10, now.Unix()+5), "unusable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := renewalReason(tc.rep, p, now)
			if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
				t.Errorf("renewalReason = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestPolicyForPicksTheOldestThatApplies(t *testing.T) {
	t0 := time.Unix(1_000_000, 0)
	tr := newTrust(&config.Server{}, newConnections(), newMetrics(prometheus.NewRegistry()), time.Now, logr.Discard())
	tr.policies = map[string]*trustPolicy{
		"newer":    {name: "newer", created: t0.Add(time.Hour)},
		"b-oldest": {name: "b-oldest", created: t0},
		"a-oldest": {name: "a-oldest", created: t0},
		"only-c3":  {name: "only-c3", created: t0.Add(-time.Hour), clusters: []string{"c3"}},
	}
	p, others := tr.policyFor("c1")
	if p.name != "a-oldest" || strings.Join(others, ",") != "b-oldest,newer" {
		t.Errorf("c1: served by %s, others %v", p.name, others)
	}
	if p, _ := tr.policyFor("c3"); p.name != "only-c3" {
		t.Errorf("c3: served by %s, want the policy naming it", p.name)
	}
	tr.policies = map[string]*trustPolicy{"only-c3": tr.policies["only-c3"]}
	if p, _ := tr.policyFor("c1"); p != nil {
		t.Errorf("c1: served by %s, which does not apply to it", p.name)
	}
}

func TestDecodeTrustRoot(t *testing.T) {
	now := time.Now()
	root, err := pki.NewRootCA(pki.Options{CommonName: "mesh-root", TTL: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	signing, err := root.NewIntermediateCA(pki.Options{CommonName: "path-len-0", TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	keyPEM := func(c *pki.Certified) []byte {
		b, err := c.KeyPEM()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	other, err := pki.NewRootCA(pki.Options{CommonName: "other", TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	secret := func(data map[string][]byte) *corev1.Secret {
		return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "gloo-mesh", Name: "root"}, Data: data}
	}
	for _, tc := range []struct {
		name string
		data map[string][]byte
		want string
	}{
		{"root-cert.pem and key.pem", map[string][]byte{"root-cert.pem": root.CAPEM(), "key.pem": keyPEM(root)}, ""},
		{"tls.crt and tls.key", map[string][]byte{"tls.crt": root.CAPEM(), "tls.key": keyPEM(root)}, ""},
		{"no certificate", map[string][]byte{"key.pem": keyPEM(root)}, "has neither root-cert.pem nor tls.crt"},
		{"no key", map[string][]byte{"root-cert.pem": root.CAPEM()}, "data[key.pem] is missing"},
		{"another key", map[string][]byte{"root-cert.pem": root.CAPEM(), "key.pem": keyPEM(other)}, "data[key.pem]"},
		{"junk", map[string][]byte{"root-cert.pem": []byte("junk"), "key.pem": keyPEM(root)}, "data[root-cert.pem]"},
		{"not self-signed, no ca.crt", map[string][]byte{"tls.crt": signing.CertPEM(), "tls.key": keyPEM(signing)}, "data[ca.crt] must hold its root"},
		{"a CA of path length 0", map[string][]byte{"tls.crt": signing.CertPEM(), "tls.key": keyPEM(signing), "ca.crt": root.CAPEM()}, "path length 0"},
		{"ca.crt of another root", map[string][]byte{"tls.crt": signing.CertPEM(), "tls.key": keyPEM(signing), "ca.crt": other.CAPEM()}, "does not verify"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := decodeTrustRoot(secret(tc.data), now)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.want == "":
				if !got.Root().Equal(root.Cert) {
					t.Error("decoded root is not the secret's")
				}
			case err == nil || !strings.Contains(err.Error(), tc.want):
				t.Errorf("error %v, want one containing %q", err, tc.want)
			case !strings.Contains(err.Error(), "gloo-mesh/root"):
				t.Errorf("error %q does not name the secret", err)
			}
		})
	}
}

// A report from the agent with a failure is recorded once in the policy's
// status and counted once, however often the agent repeats it.
func TestAgentFailureIsRecordedOnce(t *testing.T) {
	svc := fuzzService(t)
	rep := &relayv1.IstioCAStatus{Policy: "p", Error: "secret istio-system/cacerts exists and was not written by meshrelay"}
	for range 3 {
		svc.trust.report(context.Background(), "cluster-1", rep)
	}
	var m dto.Metric
	if err := svc.metrics.trustFailures.WithLabelValues("p", failAgent).Write(&m); err != nil {
		t.Fatal(err)
	}
	if got := m.GetCounter().GetValue(); got != 1 {
		t.Errorf("failures counted %v times, want once", got)
	}
	var p meshv1alpha1.RootTrustPolicy
	if err := svc.trust.api.Get(context.Background(), types.NamespacedName{Namespace: "gloo-mesh", Name: "p"}, &p); err != nil {
		t.Fatal(err)
	}
	if len(p.Status.Clusters) != 1 || p.Status.Clusters[0].Name != "cluster-1" || !strings.Contains(p.Status.Clusters[0].LastError, "agent: secret istio-system/cacerts exists") {
		t.Errorf("status.clusters = %+v", p.Status.Clusters)
	}
}

// check asks a connected cluster for a CSR once per askAgain, at once when
// the root changes, and waits longer after the agent reported a failure.
func TestCheckAsksOnceAndAgainWhenTheRootChanges(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	conns := newConnections()
	tr := newTrust(&config.Server{}, conns, newMetrics(prometheus.NewRegistry()), func() time.Time { return now }, logr.Discard())
	tr.policies["mesh"] = &trustPolicy{name: "mesh", rootSHA256: "aa"}
	pull := conns.open("c1", pullStream, nil)
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
	tr.reports["c1"] = &relayv1.IstioCAStatus{}
	tr.check("c1")
	tr.check("c1")
	if n := asks(); n != 1 {
		t.Fatalf("asked %d times for a missing cacerts, want once", n)
	}
	now = now.Add(askAgain - time.Second)
	tr.check("c1")
	if n := asks(); n != 0 {
		t.Fatalf("asked again %d times before askAgain", n)
	}
	tr.policies["mesh"] = &trustPolicy{name: "mesh", rootSHA256: "bb"}
	tr.check("c1")
	if n := asks(); n != 1 {
		t.Fatalf("asked %d times after the root changed, want at once", n)
	}
	tr.reports["c1"] = &relayv1.IstioCAStatus{Policy: "mesh", Error: "forbidden"}
	now = now.Add(askAgain)
	tr.check("c1")
	if n := asks(); n != 0 {
		t.Fatalf("asked %d times within askAfterFailure of a failure", n)
	}
	now = now.Add(askAfterFailure)
	tr.check("c1")
	if n := asks(); n != 1 {
		t.Fatalf("asked %d times after askAfterFailure, want once", n)
	}
}
