package server

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/apimachinery/pkg/types"

	"github.com/meshrelay/meshrelay/internal/testenv"
	meshv1alpha1 "github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
	"github.com/meshrelay/meshrelay/pkg/bootstraptoken"
	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/pkg/pki"
	relayv1 "github.com/meshrelay/meshrelay/relay/api/v1"
)

// issueToken does what relayctl register does on the management cluster:
// it records a fresh token for cluster, issued at issuedAt for ttl, on its
// KubernetesCluster, and waits until the server's cache holds the record.
func (f *relayFixture) issueToken(cluster string, issuedAt time.Time, ttl time.Duration) string {
	f.t.Helper()
	tok, err := bootstraptoken.New()
	if err != nil {
		f.t.Fatal(err)
	}
	rec := bootstraptoken.Issue(tok, issuedAt, ttl)
	key := types.NamespacedName{Namespace: f.cfg.Namespace, Name: cluster}
	testenv.Eventually(f.t, "record a token on KubernetesCluster "+cluster, 10*time.Second, func() error {
		var kc meshv1alpha1.KubernetesCluster
		if err := f.cluster.Client.Get(f.t.Context(), key, &kc); err != nil {
			return err
		}
		if kc.Annotations == nil {
			kc.Annotations = map[string]string{}
		}
		rec.Write(kc.Annotations)
		return f.cluster.Client.Update(f.t.Context(), &kc)
	})
	f.eventually("the token reaches the server's cache", func() error {
		var kc meshv1alpha1.KubernetesCluster
		if err := f.srv.svc.reader.Get(f.t.Context(), key, &kc); err != nil {
			return err
		}
		if got := kc.Annotations[meshv1alpha1.BootstrapTokenHashAnnotation]; got != rec.Hash {
			return fmt.Errorf("cached hash %q", got)
		}
		return nil
	})
	return tok
}

// annotations returns cluster's KubernetesCluster annotations as the API
// server holds them.
func (f *relayFixture) annotations(cluster string) map[string]string {
	f.t.Helper()
	var kc meshv1alpha1.KubernetesCluster
	if err := f.cluster.Client.Get(f.t.Context(), types.NamespacedName{Namespace: f.cfg.Namespace, Name: cluster}, &kc); err != nil {
		f.t.Fatal(err)
	}
	return kc.Annotations
}

func (f *relayFixture) tryBootstrap(rc relayv1.RelayClient, cluster, token string) (*relayv1.CertificateResponse, error) {
	key, _ := pki.GenerateKey(pki.ECDSAP256)
	csr, _ := pki.NewCSR(key, cluster)
	return rc.Bootstrap(f.t.Context(), &relayv1.BootstrapRequest{Cluster: cluster, Token: token, Csr: csr})
}

func fastSigning(c *config.Server) {
	c.PeerSigningRate, c.PeerSigningBurst, c.MaxConcurrentSigning = 1e6, 1e6, 1024
}

func TestBootstrapTokensAreBoundToOneClusterAndUsedOnce(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Names: []string{"mgmt"}})
	f := startRelay(t, env.Clusters[0], "gloo-mesh", fastSigning)
	rc := f.dial(nil)
	for _, c := range []string{"cluster-1", "cluster-2", "cluster-3", "cluster-4", "race", "stale"} {
		f.register(c)
	}
	tok1 := f.issueToken("cluster-1", time.Now(), time.Hour)
	tok2 := f.issueToken("cluster-2", time.Now(), time.Hour)

	t.Run("the management cluster keeps only the token's hash", func(t *testing.T) {
		for k, v := range f.annotations("cluster-1") {
			if strings.Contains(v, tok1) {
				t.Errorf("annotation %s holds the token itself", k)
			}
		}
	})
	t.Run("cluster-2's token cannot get a certificate for cluster-1, which is not bootstrapped", func(t *testing.T) {
		_, err := f.tryBootstrap(rc, "cluster-1", tok2)
		wantStatus(t, err, codes.Unauthenticated, "the bootstrap token is not valid for cluster cluster-1")
		wantStatus(t, err, codes.Unauthenticated, "relayctl register cluster-1")
		if rec, _ := bootstraptoken.Read(f.annotations("cluster-2")); !rec.Matches(tok2) {
			t.Error("the refused attempt spent cluster-2's token")
		}
	})
	t.Run("a cluster's own token bootstraps it and is consumed", func(t *testing.T) {
		resp, err := f.tryBootstrap(rc, "cluster-1", tok1)
		if err != nil {
			t.Fatalf("Bootstrap cluster-1 with its own token: %v", err)
		}
		if leaf, _ := pki.DecodeCertificates(resp.CertificateChain); leaf[0].DNSNames[0] != "cluster-1" {
			t.Errorf("certificate names %v", leaf[0].DNSNames)
		}
		ann := f.annotations("cluster-1")
		if rec, _ := bootstraptoken.Read(ann); rec != nil {
			t.Errorf("the token's record is still on the KubernetesCluster: %v", rec)
		}
		if _, ok := bootstraptoken.Bootstrapped(ann); !ok {
			t.Errorf("no %s annotation after the bootstrap: %v", meshv1alpha1.BootstrappedAnnotation, ann)
		}
	})
	t.Run("a used token is refused, naming relayctl register", func(t *testing.T) {
		_, err := f.tryBootstrap(rc, "cluster-1", tok1)
		wantStatus(t, err, codes.Unauthenticated, "relayctl register cluster-1")
	})
	t.Run("an unused token of cluster-2 cannot get a certificate for cluster-1, which is bootstrapped", func(t *testing.T) {
		_, err := f.tryBootstrap(rc, "cluster-1", tok2)
		wantStatus(t, err, codes.Unauthenticated, "the bootstrap token is not valid for cluster cluster-1")
		if _, err := f.tryBootstrap(rc, "cluster-2", tok2); err != nil {
			t.Errorf("cluster-2's own token, after the refused attempt for cluster-1: %v", err)
		}
	})
	t.Run("a token for an unregistered cluster says nothing about registration", func(t *testing.T) {
		_, err := f.tryBootstrap(rc, "cluster-9", tok2)
		wantStatus(t, err, codes.Unauthenticated, "the bootstrap token is not valid for cluster cluster-9")
	})
	t.Run("an expired token is Unauthenticated, naming when and relayctl register", func(t *testing.T) {
		issued := time.Now().Add(-2 * time.Hour).UTC().Truncate(time.Second)
		tok := f.issueToken("cluster-3", issued, time.Hour)
		_, err := f.tryBootstrap(rc, "cluster-3", tok)
		wantStatus(t, err, codes.Unauthenticated, "the bootstrap token of cluster cluster-3 expired unused at "+issued.Add(time.Hour).Format(time.RFC3339))
		wantStatus(t, err, codes.Unauthenticated, "issue a fresh one with relayctl register cluster-3")
		if rec, _ := bootstraptoken.Read(f.annotations("cluster-3")); rec == nil {
			t.Error("the expired record was removed: relayctl check could no longer report it")
		}
	})
	t.Run("the shared token bootstraps a cluster once, and never one bootstrapped before", func(t *testing.T) {
		if _, err := f.tryBootstrap(rc, "cluster-4", f.token()); err != nil {
			t.Fatalf("first bootstrap of cluster-4 with the shared token: %v", err)
		}
		_, err := f.tryBootstrap(rc, "cluster-4", f.token())
		wantStatus(t, err, codes.Unauthenticated, "bootstraps a cluster only once, and cluster cluster-4 was bootstrapped at")
		_, err = f.tryBootstrap(rc, "cluster-2", f.token())
		wantStatus(t, err, codes.Unauthenticated, "issue it its own token with relayctl register cluster-2")
	})

	t.Run("one token used by two callers at once gives exactly one certificate, in every round", func(t *testing.T) {
		const rounds, callers = 20, 2
		clients := make([]relayv1.RelayClient, callers)
		for i := range clients {
			clients[i] = f.dial(nil)
		}
		before := testenv.MetricValue(f.metric(`relay_certificates_issued_total{call="bootstrap"}`))
		lostAtWrite := 0
		for round := range rounds {
			tok := f.issueToken("race", time.Now(), time.Hour)
			var wg sync.WaitGroup
			start := make(chan struct{})
			errs := make([]error, callers)
			for i := range callers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					_, errs[i] = f.tryBootstrap(clients[i], "race", tok)
				}()
			}
			close(start)
			wg.Wait()
			won := 0
			for _, err := range errs {
				switch {
				case err == nil:
					won++
				case status.Code(err) == codes.Unauthenticated && strings.Contains(err.Error(), "relayctl register race"):
					if strings.Contains(err.Error(), "was already used") {
						lostAtWrite++
					}
				default:
					t.Errorf("round %d: a loser got %v, want Unauthenticated naming relayctl register", round, err)
				}
			}
			if won != 1 {
				t.Fatalf("round %d: %d certificates for one token, want exactly 1 (errors %v)", round, won, errs)
			}
		}
		if got := testenv.MetricValue(f.metric(`relay_certificates_issued_total{call="bootstrap"}`)) - before; got != rounds {
			t.Errorf("issued metric grew by %v over %d rounds, want %d", got, rounds, rounds)
		}
		t.Logf("%d of %d losers passed the cached check, had their CSR signed and lost at the conditional write", lostAtWrite, rounds*(callers-1))
	})

	t.Run("a token spent while the cache still shows it unused is refused at the conditional write", func(t *testing.T) {
		// The first write is made at the cached resourceVersion; a cache
		// that has not seen the spend must not let the token be spent twice.
		tok := f.issueToken("stale", time.Now(), time.Hour)
		var cached meshv1alpha1.KubernetesCluster
		if err := f.srv.svc.reader.Get(t.Context(), types.NamespacedName{Namespace: f.cfg.Namespace, Name: "stale"}, &cached); err != nil {
			t.Fatal(err)
		}
		if _, err := f.tryBootstrap(rc, "stale", tok); err != nil {
			t.Fatalf("the first bootstrap with the token: %v", err)
		}
		spent := f.annotations("stale")
		cred, _, _, err := f.srv.svc.checkBootstrapToken(&cached, tok, false)
		if err != nil {
			t.Fatalf("the cached copy taken before the spend must still pass the cached check: %v", err)
		}
		reason, err := f.srv.svc.consumeBootstrapToken(t.Context(), &cached, cred)
		wantStatus(t, err, codes.Unauthenticated, "was already used for cluster stale")
		if reason != reasonTokenUsed {
			t.Errorf("reason %q, want %q", reason, reasonTokenUsed)
		}
		if got := f.annotations("stale"); fmt.Sprint(got) != fmt.Sprint(spent) {
			t.Errorf("the refused spend changed the KubernetesCluster's annotations:\n%v\nwant\n%v", got, spent)
		}
	})

	t.Run("refusals are counted by their reason", func(t *testing.T) {
		for _, reason := range []string{"token", "token_used", "token_expired", "shared_token"} {
			if v := testenv.MetricValue(f.metric(`relay_certificates_refused_total{call="bootstrap",reason="` + reason + `"}`)); v < 1 {
				t.Errorf("refused{reason=%q} = %v, want at least 1", reason, v)
			}
		}
	})
}

func TestDisableSharedTokenRefusesTheSharedToken(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Names: []string{"mgmt"}})
	f := startRelay(t, env.Clusters[0], "gloo-mesh", func(c *config.Server) { c.DisableSharedToken = true })
	rc := f.dial(nil)
	f.register("cluster-1")
	own := f.issueToken("cluster-1", time.Now(), time.Hour)
	_, err := f.tryBootstrap(rc, "cluster-1", f.token())
	wantStatus(t, err, codes.Unauthenticated, "the shared identity token (gloo-mesh/relay-identity-token-secret) is turned off on this server (disableSharedToken)")
	wantStatus(t, err, codes.Unauthenticated, "relayctl register cluster-1")
	if _, err := f.tryBootstrap(rc, "cluster-1", own); err != nil {
		t.Errorf("the cluster's own token with disableSharedToken: %v", err)
	}
}
