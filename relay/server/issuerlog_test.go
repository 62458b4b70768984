package server

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/meshrelay/meshrelay/internal/relaysecrettest"
	"github.com/meshrelay/meshrelay/internal/scheme"
	meshv1alpha1 "github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
	"github.com/meshrelay/meshrelay/pkg/config"
)

// TestHandshakeIssuerRefusalsAreLoggedOnceEachAtABoundedRate: a client
// certificate from a CA the server does not admit fails the handshake
// check, and each refusal is logged once, by verifyClient, until the
// rate is spent; the next line after the pause says how many went
// unlogged.
func TestHandshakeIssuerRefusalsAreLoggedOnceEachAtABoundedRate(t *testing.T) {
	f := relaysecrettest.New(t)
	cfg := config.DefaultServer()
	keys := newKeyring(&cfg, newMetrics(prometheus.NewRegistry()))
	if _, err := keys.loadSigning(&corev1.Secret{Data: f.TLSData(t, f.Signing)}, f.Now); err != nil {
		t.Fatal(err)
	}
	ci, _ := keys.buildClientIssuers([]*x509.Certificate{f.Root.Cert}, f.Now)
	keys.clientIssuers.Store(ci)
	var lines []string
	keys.log = funcr.New(func(_, args string) { lines = append(lines, args) }, funcr.Options{})
	now := f.Now
	keys.refusals = newLimitedLog(refusalLogEvery, refusalLogBurst, func() time.Time { return now })

	outsider := newTestSigner(t, f.Now)
	leaf := outsider.issue("", f.Now, time.Hour)
	chain := []*x509.Certificate{leaf, outsider.ca.Cert}
	const calls = refusalLogBurst + 5
	for range calls {
		err := keys.verifyClient(tls.ConnectionState{PeerCertificates: chain[:1], VerifiedChains: [][]*x509.Certificate{chain}})
		if err == nil || !strings.Contains(err.Error(), "not by a CA relay-server admits client certificates from") {
			t.Fatalf("handshake check: %v, want the issuer refused", err)
		}
	}
	if len(lines) != refusalLogBurst {
		t.Fatalf("%d refusals in one instant logged %d lines, want %d (one each until the rate is spent):\n%s", calls, len(lines), refusalLogBurst, strings.Join(lines, "\n"))
	}
	for _, l := range lines {
		if !strings.Contains(l, `"msg"="refused a client certificate from a CA that may not issue them"`) || !strings.Contains(l, `"cluster"="cluster-1"`) || !strings.Contains(l, "test-signing") {
			t.Errorf("line %s does not name the refusal, the cluster and the issuer found", l)
		}
	}

	now = now.Add(refusalLogEvery)
	lines = nil
	_ = keys.verifyClient(tls.ConnectionState{PeerCertificates: chain[:1], VerifiedChains: [][]*x509.Certificate{chain}})
	if len(lines) != 1 || !strings.Contains(lines[0], `"unloggedSinceLast"=5`) {
		t.Errorf("after the pause: %q, want one line saying 5 went unlogged", lines)
	}
}

// TestHandshakeRefusalsOfARegisteredClusterAreLoggedAtABoundedRate: a
// certificate its cluster no longer admits (issued before the cluster was
// registered again) is refused at every handshake, which its holder can
// repeat in a loop; the lines share the refusals' rate, and the next line
// after the pause says how many went unlogged.
func TestHandshakeRefusalsOfARegisteredClusterAreLoggedAtABoundedRate(t *testing.T) {
	now := time.Now()
	signer := newTestSigner(t, now)
	old := signer.issue("old-uid", now, time.Hour)
	sc, err := scheme.Scheme()
	if err != nil {
		t.Fatal(err)
	}
	kc := &meshv1alpha1.KubernetesCluster{ObjectMeta: metav1.ObjectMeta{Namespace: "gloo-mesh", Name: "cluster-1", UID: "new-uid"}}
	cfg := config.DefaultServer()
	keys := newKeyring(&cfg, newMetrics(prometheus.NewRegistry()))
	keys.refusals = newLimitedLog(refusalLogEvery, refusalLogBurst, func() time.Time { return now })
	var lines []string
	s := &service{cfg: &cfg, keys: keys, reader: fake.NewClientBuilder().WithScheme(sc).WithObjects(kc).Build(),
		clientRefused: newClientRefused(prometheus.NewRegistry()),
		log:           funcr.New(func(_, args string) { lines = append(lines, args) }, funcr.Options{})}
	const calls = refusalLogBurst + 990
	for range calls {
		if err := s.admitHandshake("cluster-1", old); err == nil {
			t.Fatal("a certificate of the cluster's previous registration was admitted")
		}
	}
	if len(lines) != refusalLogBurst {
		t.Fatalf("%d refusals in one instant logged %d lines, want %d", calls, len(lines), refusalLogBurst)
	}
	if !strings.Contains(lines[0], `"msg"="refused a client certificate at the handshake"`) || !strings.Contains(lines[0], `"cluster"="cluster-1"`) {
		t.Errorf("line %s does not name the refusal and the cluster", lines[0])
	}
	now = now.Add(refusalLogEvery)
	lines = nil
	_ = s.admitHandshake("cluster-1", old)
	if want := fmt.Sprintf(`"unloggedSinceLast"=%d`, calls-refusalLogBurst); len(lines) != 1 || !strings.Contains(lines[0], want) {
		t.Errorf("after the pause: %q, want one line with %s", lines, want)
	}
}
