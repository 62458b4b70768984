package server

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/testr"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	grpccreds "google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshrelay/meshrelay/internal/testenv"
	meshv1alpha1 "github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/pkg/pki"
	"github.com/meshrelay/meshrelay/pkg/relaysecret"
	relayv1 "github.com/meshrelay/meshrelay/relay/api/v1"
)

// relayFixture is a relay server running against a local cluster.
type relayFixture struct {
	t       *testing.T
	cluster *testenv.Cluster
	cfg     config.Server
	srv     *Server
	addr    string
	metrics string
}

func startRelay(t *testing.T, c *testenv.Cluster, ns string, edit func(*config.Server)) *relayFixture {
	t.Helper()
	return startRelayWithLog(t, c, ns, testr.NewWithOptions(t, testr.Options{Verbosity: 1}), edit)
}

// startRelayWithLog is startRelay with the server logging to log.
func startRelayWithLog(t *testing.T, c *testenv.Cluster, ns string, log logr.Logger, edit func(*config.Server)) *relayFixture {
	t.Helper()
	if err := c.Client.Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); client.IgnoreAlreadyExists(err) != nil {
		t.Fatalf("create namespace: %v", err)
	}
	cfg := config.DefaultServer()
	cfg.Namespace = ns
	cfg.ClientCertificateTTL = metav1.Duration{Duration: time.Hour}
	if edit != nil {
		edit(&cfg)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mlis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(Options{Config: cfg, RESTConfig: c.Config, Log: log, Listener: lis, MetricsListener: mlis})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(runCtx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("relay server Run: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Error("relay server did not stop within 20s")
		}
	})
	f := &relayFixture{t: t, cluster: c, cfg: cfg, srv: srv, addr: lis.Addr().String(), metrics: "http://" + mlis.Addr().String()}
	f.eventually("the server is ready", func() error {
		select {
		case err := <-done:
			t.Fatalf("relay server stopped: %v", err)
		default:
		}
		if body, code := f.get("/readyz"); code != http.StatusOK {
			return fmt.Errorf("readyz %d: %s", code, body)
		}
		return nil
	})
	return f
}

func (f *relayFixture) get(path string) (string, int) {
	resp, err := http.Get(f.metrics + path)
	if err != nil {
		return err.Error(), 0
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b), resp.StatusCode
}

// metric returns the line of the scraped /metrics that starts with prefix.
func (f *relayFixture) metric(prefix string) string {
	return testenv.ScrapeMetric(f.metrics+"/metrics", prefix)
}

func (f *relayFixture) eventually(what string, check func() error) {
	f.t.Helper()
	testenv.Eventually(f.t, what, 30*time.Second, check)
}

func (f *relayFixture) secret(name string) *corev1.Secret {
	f.t.Helper()
	var s corev1.Secret
	if err := f.cluster.Client.Get(f.t.Context(), types.NamespacedName{Namespace: f.cfg.Namespace, Name: name}, &s); err != nil {
		f.t.Fatalf("get secret %s: %v", name, err)
	}
	return &s
}

func (f *relayFixture) roots() *x509.CertPool {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(f.secret(f.cfg.RootTLSSecret.Name).Data["ca.crt"]) {
		f.t.Fatal("root secret has no ca.crt")
	}
	return pool
}

// dial connects like an agent: the root pinned, SNI = authority, and a
// client certificate when cert is set.
func (f *relayFixture) dial(cert *tls.Certificate) relayv1.RelayClient {
	f.t.Helper()
	return f.dialWith(f.roots(), cert)
}

// dialWith is dial with roots pinned in place of the root secret's.
func (f *relayFixture) dialWith(roots *x509.CertPool, cert *tls.Certificate) relayv1.RelayClient {
	f.t.Helper()
	tc := &tls.Config{RootCAs: roots, ServerName: f.cfg.Authority, MinVersion: tls.VersionTLS12}
	if cert != nil {
		tc.Certificates = []tls.Certificate{*cert}
	}
	conn, err := grpc.NewClient(f.addr, grpc.WithTransportCredentials(grpccreds.NewTLS(tc)))
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { conn.Close() })
	return relayv1.NewRelayClient(conn)
}

// register creates KubernetesCluster name and waits until the server's
// cache holds it: a call right after would otherwise race the cache, and
// be refused as from an unregistered cluster on a loaded machine.
func (f *relayFixture) register(name string) {
	f.t.Helper()
	kc := &meshv1alpha1.KubernetesCluster{ObjectMeta: metav1.ObjectMeta{Namespace: f.cfg.Namespace, Name: name}}
	if err := f.cluster.Client.Create(f.t.Context(), kc); err != nil {
		f.t.Fatalf("register %s: %v", name, err)
	}
	f.eventually("relay-server's cache holds KubernetesCluster "+name, func() error {
		if m := f.metric(`relay_cluster_registered{cluster="` + name + `"}`); testenv.MetricValue(m) != 1 {
			return fmt.Errorf("%q", m)
		}
		return nil
	})
}

func (f *relayFixture) token() string {
	return string(f.secret(f.cfg.TokenSecret.Name).Data["token"])
}

// bootstrap gets a client certificate for cluster with a fresh key and
// token.
func (f *relayFixture) bootstrap(rc relayv1.RelayClient, cluster, token string) (*tls.Certificate, *relayv1.CertificateResponse) {
	f.t.Helper()
	key, _ := pki.GenerateKey(pki.ECDSAP256)
	csr, _ := pki.NewCSR(key, cluster)
	resp, err := rc.Bootstrap(f.t.Context(), &relayv1.BootstrapRequest{Cluster: cluster, Token: token, Csr: csr})
	if err != nil {
		f.t.Fatalf("Bootstrap %s: %v", cluster, err)
	}
	keyPEM, _ := pki.EncodePrivateKey(key)
	cert, err := tls.X509KeyPair(resp.CertificateChain, keyPEM)
	if err != nil {
		f.t.Fatalf("returned chain does not pair with the key: %v", err)
	}
	return &cert, resp
}

func wantStatus(t *testing.T, err error, code codes.Code, msg string) {
	t.Helper()
	st, _ := status.FromError(err)
	if st.Code() != code || !strings.Contains(st.Message(), msg) {
		t.Errorf("got %v, want %s containing %q", err, code, msg)
	}
}

func TestRelayServerBootstrapsSignsAndServesStreams(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Names: []string{"mgmt"}})
	f := startRelay(t, env.Clusters[0], "gloo-mesh", nil)
	ctx := t.Context()

	t.Run("the CA secrets are generated and chain to the root", func(t *testing.T) {
		root := f.secret("relay-root-tls-secret")
		signing := f.secret("relay-tls-signing-secret")
		server := f.secret("relay-server-tls-secret")
		if root.Labels[meshv1alpha1.GeneratedLabel] != "true" || len(f.token()) < 32 {
			t.Errorf("root labels %v, token length %d", root.Labels, len(f.token()))
		}
		rootCert, err := pki.DecodeCertificate(root.Data["ca.crt"])
		if err != nil {
			t.Fatal(err)
		}
		inter, _ := pki.DecodeCertificate(signing.Data["tls.crt"])
		if _, err := pki.VerifyChain(inter, nil, []*x509.Certificate{rootCert}, pki.RoleSigningCA, time.Now()); err != nil {
			t.Errorf("signing CA does not chain to the root: %v", err)
		}
		v, err := relaysecret.Load(relaysecret.Server, map[string][]byte{relaysecret.KeyTLSCert: server.Data["tls.crt"], relaysecret.KeyTLSKey: server.Data["tls.key"], relaysecret.KeyCACert: server.Data["ca.crt"]}, "", relaysecret.Context{Authority: "gloo-mesh-mgmt-server.gloo-mesh", Now: time.Now()})
		if err != nil {
			t.Fatalf("server secret: %v", err)
		}
		if err := pki.CoversAuthority(v.Cert, "anything.gloo-mesh"); err != nil {
			t.Errorf("server certificate does not cover *.gloo-mesh: %v", err)
		}
	})

	rc := f.dial(nil)
	key, _ := pki.GenerateKey(pki.ECDSAP256)
	csr1, _ := pki.NewCSR(key, "cluster-1")

	t.Run("a wrong token is Unauthenticated", func(t *testing.T) {
		_, err := rc.Bootstrap(ctx, &relayv1.BootstrapRequest{Cluster: "cluster-1", Token: "wrong", Csr: csr1})
		wantStatus(t, err, codes.Unauthenticated, "the bootstrap token is not valid for cluster cluster-1")
	})
	t.Run("an unregistered cluster is PermissionDenied with the fix", func(t *testing.T) {
		csr3, _ := pki.NewCSR(key, "cluster-3")
		_, err := rc.Bootstrap(ctx, &relayv1.BootstrapRequest{Cluster: "cluster-3", Token: f.token(), Csr: csr3})
		wantStatus(t, err, codes.PermissionDenied, "cluster cluster-3 is not registered: create KubernetesCluster cluster-3 in gloo-mesh")
	})
	f.register("cluster-1")
	// Refused CSRs do not spend the cluster's own token: it bootstraps
	// cluster-1 below. (While it is pending the shared token is refused for
	// cluster-1: TestTheSharedTokenYieldsToClusterTokensAndToItsSecret.)
	own := f.issueToken("cluster-1", time.Now(), time.Hour)
	t.Run("a CSR for another name is InvalidArgument naming both", func(t *testing.T) {
		csr2, _ := pki.NewCSR(key, "cluster-2")
		_, err := rc.Bootstrap(ctx, &relayv1.BootstrapRequest{Cluster: "cluster-1", Token: own, Csr: csr2})
		wantStatus(t, err, codes.InvalidArgument, "asks for DNS names [cluster-2], but the caller may hold only [cluster-1]")
	})
	t.Run("a cluster name with an underscore is InvalidArgument", func(t *testing.T) {
		_, err := rc.Bootstrap(ctx, &relayv1.BootstrapRequest{Cluster: "cluster_1", Token: own, Csr: csr1})
		wantStatus(t, err, codes.InvalidArgument, `use "cluster-1"`)
	})
	t.Run("a CSR asking to be a CA is InvalidArgument", func(t *testing.T) {
		ext, _ := asn1.Marshal(struct{ IsCA bool }{true})
		der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
			DNSNames:        []string{"cluster-1"},
			ExtraExtensions: []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 19}, Value: ext}},
		}, key)
		if err != nil {
			t.Fatal(err)
		}
		csr := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
		_, err = rc.Bootstrap(ctx, &relayv1.BootstrapRequest{Cluster: "cluster-1", Token: own, Csr: csr})
		wantStatus(t, err, codes.InvalidArgument, "asks to be a CA")
	})
	t.Run("a CSR that is not PEM is InvalidArgument", func(t *testing.T) {
		_, err := rc.Bootstrap(ctx, &relayv1.BootstrapRequest{Cluster: "cluster-1", Token: own, Csr: []byte("junk")})
		wantStatus(t, err, codes.InvalidArgument, "no PEM data found")
	})

	cert, resp := f.bootstrap(rc, "cluster-1", own)
	t.Run("the bootstrap certificate validates as cluster-1's client secret", func(t *testing.T) {
		keyPEM, _ := pki.EncodePrivateKey(cert.PrivateKey.(crypto.Signer))
		if _, err := relaysecret.Load(relaysecret.Client, map[string][]byte{relaysecret.KeyTLSCert: resp.CertificateChain, relaysecret.KeyTLSKey: keyPEM, relaysecret.KeyCACert: resp.CaCertificate}, "", relaysecret.Context{Cluster: "cluster-1", Now: time.Now()}); err != nil {
			t.Errorf("issued secret does not validate: %v", err)
		}
		if m := f.metric(`relay_certificates_issued_total{call="bootstrap"}`); !strings.HasSuffix(m, " 1") {
			t.Errorf("issued metric = %q, want 1", m)
		}
		if m := f.metric(`relay_certificates_refused_total{call="bootstrap",reason="token"}`); !strings.HasSuffix(m, " 1") {
			t.Errorf("refused metric = %q, want 1", m)
		}
	})

	mtls := f.dial(cert)
	t.Run("renew over mTLS signs for the caller's own cluster only", func(t *testing.T) {
		nkey, _ := pki.GenerateKey(pki.ECDSAP256)
		csr, _ := pki.NewCSR(nkey, "cluster-1")
		got, err := mtls.Renew(ctx, &relayv1.RenewRequest{Csr: csr})
		if err != nil {
			t.Fatalf("Renew: %v", err)
		}
		leaf, _ := pki.DecodeCertificates(got.CertificateChain)
		if leaf[0].DNSNames[0] != "cluster-1" {
			t.Errorf("renewed certificate names %v", leaf[0].DNSNames)
		}
		other, _ := pki.NewCSR(nkey, "cluster-2")
		_, err = mtls.Renew(ctx, &relayv1.RenewRequest{Csr: other})
		wantStatus(t, err, codes.InvalidArgument, "may hold only [cluster-1]")
	})
	t.Run("renew without a client certificate is Unauthenticated", func(t *testing.T) {
		_, err := rc.Renew(ctx, &relayv1.RenewRequest{Csr: csr1})
		wantStatus(t, err, codes.Unauthenticated, "needs a client certificate")
	})

	push, err := mtls.Push(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := push.Send(&relayv1.PushMessage{Message: &relayv1.PushMessage_Status{Status: &relayv1.AgentStatus{AgentVersion: "test", ClientCertificateNotAfter: cert.Leaf.NotAfter.Unix()}}}); err != nil {
		t.Fatal(err)
	}
	pull, err := mtls.Pull(ctx, &relayv1.PullRequest{Replica: "agent-0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Run("pull starts with the trust bundle", func(t *testing.T) {
		in, err := pull.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if tb := in.GetTrustBundle(); tb == nil || !strings.Contains(string(tb.GetCaCertificates()), "BEGIN CERTIFICATE") {
			t.Errorf("first instruction = %v, want the trust bundle", in)
		}
	})
	t.Run("the relay metrics count one push and one pull stream", func(t *testing.T) {
		f.eventually("gauges reach 1", func() error {
			for _, g := range []string{"relay_push_clients_connected", "relay_pull_clients_connected"} {
				if m := f.metric(g + `{cluster="cluster-1"}`); !strings.HasSuffix(m, " 1") {
					return fmt.Errorf("%s line %q", g, m)
				}
			}
			return nil
		})
	})
	t.Run("renew-now reaches the pull stream", func(t *testing.T) {
		if n := f.srv.RenewNow("cluster-1", "test"); n != 1 {
			t.Errorf("RenewNow reached %d streams, want 1", n)
		}
		in, err := pull.Recv()
		if err != nil || in.GetRenewNow().GetReason() != "test" {
			t.Errorf("Recv = %v, %v; want RenewNow", in, err)
		}
	})

	t.Run("a server certificate change is used by new handshakes while streams stay up", func(t *testing.T) {
		before := handshakeSerial(t, f)
		root := f.secret("relay-root-tls-secret")
		rootCA, err := certifiedFromSecret(relaysecret.Root, root)
		if err != nil {
			t.Fatal(err)
		}
		next, err := rootCA.IssueServer(pki.Options{DNSNames: []string{"*.gloo-mesh", "gloo-mesh-mgmt-server.gloo-mesh"}, TTL: 24 * time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		s := f.secret("relay-server-tls-secret")
		s.Data["tls.crt"] = next.CertPEM()
		s.Data["tls.key"], _ = next.KeyPEM()
		if err := f.cluster.Client.Update(ctx, s); err != nil {
			t.Fatal(err)
		}
		f.eventually("new handshakes present the new certificate", func() error {
			if got := handshakeSerial(t, f); got.Cmp(next.Cert.SerialNumber) != 0 {
				return fmt.Errorf("serial %x, want %x (was %x)", got, next.Cert.SerialNumber, before)
			}
			return nil
		})
		if err := push.Send(&relayv1.PushMessage{Message: &relayv1.PushMessage_Status{Status: &relayv1.AgentStatus{AgentVersion: "after-reload"}}}); err != nil {
			t.Errorf("push stream broke on reload: %v", err)
		}
		if n := f.srv.RenewNow("cluster-1", "after-reload"); n != 1 {
			t.Errorf("pull stream gone after reload: RenewNow reached %d", n)
		}
		if in, err := pull.Recv(); err != nil || in.GetRenewNow().GetReason() != "after-reload" {
			t.Errorf("pull after reload: %v, %v", in, err)
		}
	})

	t.Run("a new signing secret signs the next certificates", func(t *testing.T) {
		rootCA, err := certifiedFromSecret(relaysecret.Root, f.secret("relay-root-tls-secret"))
		if err != nil {
			t.Fatal(err)
		}
		next, err := rootCA.NewIntermediateCA(pki.Options{CommonName: "rotated-signing-ca", TTL: 24 * time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		s := f.secret("relay-tls-signing-secret")
		s.Data["tls.crt"] = next.CertPEM()
		s.Data["tls.key"], _ = next.KeyPEM()
		if err := f.cluster.Client.Update(ctx, s); err != nil {
			t.Fatal(err)
		}
		f.eventually("renewals chain through the new intermediate", func() error {
			nkey, _ := pki.GenerateKey(pki.ECDSAP256)
			csr, _ := pki.NewCSR(nkey, "cluster-1")
			got, err := mtls.Renew(ctx, &relayv1.RenewRequest{Csr: csr})
			if err != nil {
				return err
			}
			chain, _ := pki.DecodeCertificates(got.CertificateChain)
			if len(chain) != 2 || chain[1].Subject.CommonName != "rotated-signing-ca" {
				return fmt.Errorf("chain ends with %q", chain[len(chain)-1].Subject.CommonName)
			}
			return nil
		})
		if got := testenv.MetricValue(f.metric(`relay_certificate_expiry_timestamp_seconds{certificate="intermediate"}`)); got != float64(next.Cert.NotAfter.Unix()) {
			t.Errorf("intermediate expiry metric %v, want %d", got, next.Cert.NotAfter.Unix())
		}
	})

	t.Run("expiry metrics cover the root, the server and the cluster", func(t *testing.T) {
		for _, p := range []string{
			`relay_certificate_expiry_timestamp_seconds{certificate="root"}`,
			`relay_certificate_expiry_timestamp_seconds{certificate="server"}`,
			`relay_client_certificate_expiry_timestamp_seconds{cluster="cluster-1"}`,
		} {
			if v := testenv.MetricValue(f.metric(p)); v < float64(time.Now().Unix()) {
				t.Errorf("metric %s = %v, want a time in the future", p, v)
			}
		}
	})

	t.Run("deleting the KubernetesCluster drops its streams and refuses renewal", func(t *testing.T) {
		kc := &meshv1alpha1.KubernetesCluster{ObjectMeta: metav1.ObjectMeta{Namespace: "gloo-mesh", Name: "cluster-1"}}
		if err := f.cluster.Client.Delete(ctx, kc); err != nil {
			t.Fatal(err)
		}
		// The agent renewed above without moving its streams, which still
		// present a certificate of the replaced signing CA: the renewal
		// planner may have told it to renew again.
		var err error
		for {
			var in *relayv1.Instruction
			if in, err = pull.Recv(); err != nil {
				break
			}
			if in.GetRenewAt() == nil {
				t.Fatalf("instruction %v after deregistration, want the stream ended", in)
			}
		}
		wantStatus(t, err, codes.PermissionDenied, "cluster cluster-1 was deregistered")
		// The push stream ends with the reason, or, once the server has
		// closed the dropped cluster's connection (closeGrace later), with it.
		_, err = push.CloseAndRecv()
		if c := status.Code(err); c != codes.PermissionDenied && c != codes.Unavailable {
			t.Errorf("push after deregistration: %v, want PermissionDenied or Unavailable", err)
		}
		f.eventually("gauges drop to 0", func() error {
			if m := f.metric(`relay_pull_clients_connected{cluster="cluster-1"}`); !strings.HasSuffix(m, " 0") {
				return fmt.Errorf("pull gauge %q", m)
			}
			return nil
		})
		nkey, _ := pki.GenerateKey(pki.ECDSAP256)
		csr, _ := pki.NewCSR(nkey, "cluster-1")
		_, err = mtls.Renew(ctx, &relayv1.RenewRequest{Csr: csr})
		wantStatus(t, err, codes.PermissionDenied, "cluster cluster-1 is not registered")
	})

	t.Run("a client certificate with two names fails the handshake", func(t *testing.T) {
		signing, err := certifiedFromSecret(relaysecret.Signing, f.secret("relay-tls-signing-secret"))
		if err != nil {
			t.Fatal(err)
		}
		two, _ := signing.IssueClient(pki.Options{DNSNames: []string{"cluster-1", "cluster-2"}, TTL: time.Hour})
		keyPEM, _ := two.KeyPEM()
		pair, _ := tls.X509KeyPair(two.CertPEM(), keyPEM)
		_, err = f.dial(&pair).Renew(ctx, &relayv1.RenewRequest{Csr: csr1})
		if status.Code(err) != codes.Unavailable {
			t.Errorf("Renew with a two-name certificate: %v, want the handshake to fail (Unavailable)", err)
		}
	})

	t.Run("a client that does not negotiate h2 is disconnected after the handshake", func(t *testing.T) {
		for _, protos := range [][]string{nil, {"http/1.1"}} {
			conn, err := tls.Dial("tcp", f.addr, &tls.Config{RootCAs: f.roots(), ServerName: f.cfg.Authority, NextProtos: protos})
			if err != nil {
				t.Fatalf("ALPN %v: TLS dial: %v", protos, err)
			}
			_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, err = conn.Read(make([]byte, 1))
			conn.Close()
			if !errors.Is(err, io.EOF) {
				t.Errorf("ALPN %v: read after the handshake = %v, want the server to close the connection (EOF)", protos, err)
			}
		}
	})
}

func handshakeSerial(t *testing.T, f *relayFixture) *big.Int {
	t.Helper()
	conn, err := tls.Dial("tcp", f.addr, &tls.Config{RootCAs: f.roots(), ServerName: f.cfg.Authority, NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatalf("TLS dial: %v", err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber
}
