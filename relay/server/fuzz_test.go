package server

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/meshrelay/meshrelay/internal/scheme"
	meshv1alpha1 "github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/pkg/pki"
	relayv1 "github.com/meshrelay/meshrelay/relay/api/v1"
)

// fuzzService is a service with real credentials whose cluster lookups
// come from an in-memory client holding KubernetesCluster cluster-1: the
// request handling is pure logic over them. Its trust serves every cluster
// under the loaded policy p.
func fuzzService(t testing.TB) *service {
	t.Helper()
	scheme, _ := scheme.Scheme()
	cfg := config.DefaultServer()
	policy := &meshv1alpha1.RootTrustPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: cfg.Namespace, Name: "p"}}
	policy.Spec.Config.MgmtServerCa.Generated = &meshv1alpha1.GeneratedRoot{}
	reader := fake.NewClientBuilder().WithScheme(scheme).WithObjects(
		&meshv1alpha1.KubernetesCluster{ObjectMeta: metav1.ObjectMeta{Namespace: cfg.Namespace, Name: "cluster-1"}},
		policy,
	).WithStatusSubresource(policy).Build()
	return serviceWith(t, &cfg, reader)
}

// serviceWith is fuzzService's service reading clusters from reader.
func serviceWith(t testing.TB, cfg *config.Server, reader client.Client) *service {
	t.Helper()
	root, err := pki.NewRootCA(pki.Options{CommonName: "fuzz-root", TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	inter, err := root.NewIntermediateCA(pki.Options{CommonName: "fuzz-signing", TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	m := newMetrics(prometheus.NewRegistry())
	keys := newKeyring(cfg, m)
	iss, err := pki.NewIssuer(inter, pki.Policy{Role: pki.RoleClient, TTL: time.Hour}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	keys.issuer.Store(iss)
	tok := []byte("the-token")
	keys.token.Store(&tok)
	conns := newConnections()
	tr := newTestTrust(cfg, conns, m, clock.RealClock{})
	tr.State.setPolicy(&trustPolicy{name: "p", signer: root, rootPEM: root.CAPEM(), rootSHA256: pki.Fingerprint(root.Cert), ttl: time.Hour})
	return &service{
		cfg: cfg, keys: keys, reader: reader, api: reader, clusters: clientUpdater{reader}, metrics: m, clock: clock.RealClock{}, log: logr.Discard(),
		limiter: newSigningLimiter(1<<20, 1e9, 1<<20, time.Now), conns: conns, trust: tr,
		bounds: newAgentBounds(prometheus.NewRegistry(), cfg, time.Now, logr.Discard()),
	}
}

// clientUpdater is clusterUpdater over a controller-runtime client, for
// the tests whose clusters live in a fake client.
type clientUpdater struct{ c client.Writer }

func (u clientUpdater) update(ctx context.Context, kc *meshv1alpha1.KubernetesCluster) error {
	return u.c.Update(ctx, kc)
}

// newTestTrust is a trust with nothing loaded, discarding its log.
func newTestTrust(cfg *config.Server, conns *connections, m *metrics, clk clock.WithTicker) *trust {
	return newTrust(trustOptions{
		State: newTrustState(), Results: newPendingResults(), Queue: newPolicyQueue(cfg.Namespace),
		Conns: conns, Metrics: m, Clock: clk, Log: logr.Discard(),
	})
}

// FuzzBootstrap decodes arbitrary bytes as a BootstrapRequest, as gRPC
// would, and hands it to Bootstrap. Property: it never panics; it answers
// with one of the documented codes; and a certificate comes back only for
// the right token and the registered cluster, naming exactly that cluster.
func FuzzBootstrap(f *testing.F) {
	key, _ := pki.GenerateKey(pki.ECDSAP256)
	good, _ := pki.NewCSR(key, "cluster-1")
	other, _ := pki.NewCSR(key, "cluster-2")
	for _, r := range []*relayv1.BootstrapRequest{
		{Cluster: "cluster-1", Token: "the-token", Csr: good},
		{Cluster: "cluster-1", Token: "wrong", Csr: good},
		{Cluster: "cluster-2", Token: "the-token", Csr: other},
		{Cluster: "cluster_1", Token: "the-token", Csr: []byte("junk")},
	} {
		b, _ := proto.Marshal(r)
		f.Add(b)
	}
	svc := fuzzService(f)
	allowed := []codes.Code{codes.InvalidArgument, codes.Unauthenticated, codes.PermissionDenied}
	f.Fuzz(func(t *testing.T, data []byte) {
		var req relayv1.BootstrapRequest
		if err := proto.Unmarshal(data, &req); err != nil {
			return
		}
		resp, err := svc.Bootstrap(context.Background(), &req)
		if err != nil {
			if code := status.Code(err); !slices.Contains(allowed, code) {
				t.Fatalf("unexpected code %s: %v", code, err)
			}
			return
		}
		if req.GetToken() != "the-token" || req.GetCluster() != "cluster-1" {
			t.Fatalf("issued for cluster %q with token %q", req.GetCluster(), req.GetToken())
		}
		certs, err := pki.DecodeCertificates(resp.GetCertificateChain())
		if err != nil || !slices.Equal(certs[0].DNSNames, []string{"cluster-1"}) || certs[0].IsCA {
			t.Fatalf("issued certificate %v: %v", certs[0].DNSNames, err)
		}
	})
}

// FuzzPushMessage decodes arbitrary bytes as a PushMessage and handles it.
// Properties: it never panics, whatever the fields hold, and no name but
// that of policy p, the one loaded, becomes a label or a pending result.
func FuzzPushMessage(f *testing.F) {
	key, err := pki.GenerateKey(pki.ECDSAP256)
	if err != nil {
		f.Fatal(err)
	}
	istioCSR, err := pki.NewCSR(key, pki.IstiodDNSName)
	if err != nil {
		f.Fatal(err)
	}
	for _, m := range []*relayv1.PushMessage{
		{Message: &relayv1.PushMessage_Status{Status: &relayv1.AgentStatus{AgentVersion: "v1", ClientCertificateNotAfter: 1e9, Replica: "a"}}},
		{Message: &relayv1.PushMessage_IntermediateCsr{IntermediateCsr: &relayv1.IntermediateCSR{Policy: "p", Csr: []byte("x")}}},
		{Message: &relayv1.PushMessage_IntermediateCsr{IntermediateCsr: &relayv1.IntermediateCSR{Policy: "p", Csr: istioCSR}}},
		{Message: &relayv1.PushMessage_Status{Status: &relayv1.AgentStatus{IstioCa: &relayv1.IstioCAStatus{Policy: "p", NotBefore: 1, NotAfter: 2, RootSha256: "ab", Error: "e"}}}},
	} {
		b, _ := proto.Marshal(m)
		f.Add(b)
	}
	svc := fuzzService(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		var msg relayv1.PushMessage
		if err := proto.Unmarshal(data, &msg); err != nil {
			return
		}
		svc.handlePush("cluster-1", &msg)
		for series := range collected(t, svc.metrics.trustFailures) {
			if !strings.Contains(series, `policy="p"`) {
				t.Fatalf("series %s names a policy that is not loaded", series)
			}
		}
		if rec := svc.conns.clusters["cluster-1"]; rec != nil && rec.istio != nil && rec.istio.policy != "p" && rec.istio.policy != "" {
			t.Fatalf("the Istio expiry is labelled with policy %q, which is not loaded", rec.istio.policy)
		}
		for _, p := range svc.trust.Results.policies() {
			if p != "p" {
				t.Fatalf("results pending under policy %q, which is not loaded", p)
			}
		}
	})
}
