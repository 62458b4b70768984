package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	grpccreds "google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/meshrelay/meshrelay/internal/relayctl/certgen"
	"github.com/meshrelay/meshrelay/internal/testenv"
	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/pkg/pki"
	"github.com/meshrelay/meshrelay/pkg/relaysecret"
	relayv1 "github.com/meshrelay/meshrelay/relay/api/v1"
)

// generated is what relayctl gen makes for the management cluster and one
// workload cluster, decoded.
type generated struct {
	mgmt     []corev1.Secret
	root     *pki.Certified
	signing  *pki.Certified
	meshCA   *pki.Certified
	client   *tls.Certificate
	workload string
}

// generate runs relayctl gen's architecture arch for cluster into namespace
// ns and decodes the CAs a test mints with: the relay root, the signing CA
// and the mesh CA whose key every workload cluster's cacerts holds.
func generate(t *testing.T, arch certgen.Architecture, ns, cluster string) *generated {
	t.Helper()
	sets, err := certgen.Generate(certgen.Options{Architecture: arch, Clusters: []string{cluster}, Namespace: ns})
	if err != nil {
		t.Fatalf("relayctl gen %s: %v", arch, err)
	}
	g := &generated{mgmt: sets[0].Secrets, workload: cluster}
	decode := func(k relaysecret.Kind, s corev1.Secret) *relaysecret.Material {
		m, errs := relaysecret.Decode(k, s.Data, "")
		if len(errs) > 0 {
			t.Fatalf("generated secret %s/%s: %s", s.Namespace, s.Name, relaysecret.Message(errs))
		}
		return m
	}
	for _, s := range sets[0].Secrets {
		switch s.Name {
		case config.DefaultRootTLSSecret:
			g.root = decode(relaysecret.Root, s).Certified()
		case config.DefaultSigningTLSSecret:
			g.signing = decode(relaysecret.Signing, s).Certified()
		}
	}
	for _, s := range sets[1].Secrets {
		switch s.Name {
		case config.DefaultIstioCASecret:
			g.meshCA = decode(relaysecret.IstioCA, s).Certified()
		case config.DefaultClientTLSSecret:
			g.client = decode(relaysecret.Client, s).TLSCertificate()
		}
	}
	if g.root == nil || g.signing == nil || g.meshCA == nil || g.client == nil {
		t.Fatalf("relayctl gen %s made no root, signing CA, mesh CA or client certificate", arch)
	}
	return g
}

// applySecrets creates secrets on c.
func applySecrets(t *testing.T, c *testenv.Cluster, secrets ...corev1.Secret) {
	t.Helper()
	for _, s := range secrets {
		s := s
		s.ResourceVersion = ""
		if err := c.Client.Create(t.Context(), &s); err != nil {
			t.Fatalf("create secret %s/%s: %v", s.Namespace, s.Name, err)
		}
	}
}

// mint issues a client certificate for cluster with ca, its chain up to
// (not including) the root in the certificate, as an agent presents it.
func mint(t *testing.T, ca *pki.Certified, cluster string) *tls.Certificate {
	t.Helper()
	c, err := ca.IssueClient(pki.Options{DNSNames: []string{cluster}, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := c.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(c.CertPEM(), keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return &pair
}

// pulls opens a pull stream with cert and waits for its first message: the
// handshake admitted cert. It returns the first message or the error.
func (f *relayFixture) pulls(cert *tls.Certificate) (*relayv1.Instruction, error) {
	ctx, cancel := context.WithTimeout(f.t.Context(), 15*time.Second)
	defer cancel()
	// The certificate is sent whatever CAs the server asks for, as an
	// attacker would send it; Go's client would leave out one that no
	// requested CA issued.
	tc := &tls.Config{RootCAs: f.roots(), ServerName: f.cfg.Authority, MinVersion: tls.VersionTLS12,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }}
	conn, err := grpc.NewClient(f.addr, grpc.WithTransportCredentials(grpccreds.NewTLS(tc)))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	pull, err := relayv1.NewRelayClient(conn).Pull(ctx, &relayv1.PullRequest{Replica: "test"})
	if err != nil {
		return nil, err
	}
	return pull.Recv()
}

// refused says whether err is the handshake failing, which a gRPC client
// sees as Unavailable.
func refused(err error) bool { return status.Code(err) == codes.Unavailable }

// verifiedChain verifies cert to the relay roots for client auth, as the
// server's TLS stack does before the issuer check.
func verifiedChain(t *testing.T, cert *tls.Certificate, roots ...*x509.Certificate) [][]*x509.Certificate {
	t.Helper()
	leaf, _ := x509.ParseCertificate(cert.Certificate[0])
	var inter []*x509.Certificate
	for _, der := range cert.Certificate[1:] {
		c, _ := x509.ParseCertificate(der)
		inter = append(inter, c)
	}
	chain, err := pki.VerifyChain(leaf, inter, roots, pki.RoleClient, time.Now())
	if err != nil {
		t.Fatalf("the client certificate does not even verify to the relay root, so the test proves nothing: %v", err)
	}
	return [][]*x509.Certificate{chain}
}

// TestServerAdmitsClientCertificatesOnlyFromItsSigningCA runs relay-server
// on relayctl gen's two-intermediates secrets, where every workload
// cluster's istio-system/cacerts holds the key of a CA under the relay
// root, and shows what the server admits at the TLS handshake: the signing
// CA's client certificates, and after the signing secret changes the
// previous signing CA's for one change only; not a certificate that the
// mesh CA key mints for a registered cluster, nor one from a CA that only
// the server secret's ca.crt names.
func TestServerAdmitsClientCertificatesOnlyFromItsSigningCA(t *testing.T) {
	const ns, cluster = "pinning", "cluster-1"
	env := testenv.Start(t, testenv.Options{Names: []string{"mgmt"}})
	c := env.Clusters[0]
	if err := c.Client.Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	g := generate(t, certgen.TwoIntermediates, ns, cluster)
	applySecrets(t, c, g.mgmt...)
	f := startRelay(t, c, ns, nil)
	f.register(cluster)
	ctx := t.Context()

	t.Run("the signing CA's client certificate is admitted and the trust bundle is the relay root", func(t *testing.T) {
		first, err := f.pulls(g.client)
		if err != nil {
			t.Fatalf("Pull with relayctl gen's client certificate: %v", err)
		}
		bundle, err := pki.DecodeCertificates(first.GetTrustBundle().GetCaCertificates())
		if err != nil || len(bundle) != 1 || !bundle[0].Equal(g.root.Cert) {
			t.Errorf("trust bundle %d certificates (%v), want the relay root alone", len(bundle), err)
		}
	})

	t.Run("a client certificate the workload cluster's mesh CA key mints is refused at the handshake", func(t *testing.T) {
		forged := mint(t, g.meshCA, cluster)
		chains := verifiedChain(t, forged, g.root.Cert)
		if _, err := f.pulls(forged); !refused(err) {
			t.Errorf("Pull with a mesh-CA client certificate for registered %s: %v, want the handshake refused (Unavailable)", cluster, err)
		}
		err := f.srv.keys.verifyClient(tls.ConnectionState{PeerCertificates: chains[0][:1], VerifiedChains: chains})
		if err == nil || !strings.Contains(err.Error(), "meshrelay-mesh-ca") || !strings.Contains(err.Error(), relaysecret.SigningCommonName) {
			t.Errorf("handshake check: %v, want an error naming the issuer found (meshrelay-mesh-ca) and the one admitted (%s)", err, relaysecret.SigningCommonName)
		}
	})

	t.Run("a client certificate from a CA only the server secret's ca.crt names is refused", func(t *testing.T) {
		corporate, err := pki.NewRootCA(pki.Options{CommonName: "corporate root", TTL: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		s := f.secret(config.DefaultServerTLSSecret)
		s.Data[relaysecret.KeyCACert] = append(s.Data[relaysecret.KeyCACert], corporate.CertPEM()...)
		if err := c.Client.Update(ctx, s); err != nil {
			t.Fatal(err)
		}
		// The server loads the edited secret (its serving certificate still
		// verifies, so the secret is good); before pinning, a corporate
		// certificate verified to the union of the secrets' ca.crt.
		f.eventually("the server loads the edited server secret", func() error {
			keys := f.srv.keys
			keys.mu.Lock()
			defer keys.mu.Unlock()
			if got := keys.seen[types.NamespacedName{Namespace: ns, Name: s.Name}]; got.resourceVersion != s.ResourceVersion || got.err != nil {
				return fmt.Errorf("loaded version %q (%v), want %q", got.resourceVersion, got.err, s.ResourceVersion)
			}
			return nil
		})
		if _, err := f.pulls(mint(t, corporate, cluster)); !refused(err) {
			t.Errorf("Pull with a certificate of the corporate CA in the server secret's ca.crt: %v, want the handshake refused", err)
		}
		if _, err := f.pulls(g.client); err != nil {
			t.Errorf("the signing CA's certificate stopped working after the server secret changed: %v", err)
		}
	})

	t.Run("the previous signing CA's certificates work after one change of the signing secret, not after two", func(t *testing.T) {
		rotate := func(name string) *pki.Certified {
			next, err := g.root.NewIntermediateCA(pki.Options{CommonName: name, TTL: 24 * time.Hour})
			if err != nil {
				t.Fatal(err)
			}
			s := f.secret(config.DefaultSigningTLSSecret)
			s.Data[relaysecret.KeyTLSCert] = next.CertPEM()
			s.Data[relaysecret.KeyTLSKey], _ = next.KeyPEM()
			if err := c.Client.Update(ctx, s); err != nil {
				t.Fatal(err)
			}
			f.eventually("a certificate of "+name+" is admitted", func() error {
				_, err := f.pulls(mint(t, next, cluster))
				return err
			})
			return next
		}
		second := rotate("second-signing-ca")
		if _, err := f.pulls(g.client); err != nil {
			t.Errorf("after one change, the first signing CA's certificate was refused: %v", err)
		}
		rotate("third-signing-ca")
		if _, err := f.pulls(g.client); !refused(err) {
			t.Errorf("after two changes, the first signing CA's certificate: %v, want the handshake refused", err)
		}
		if _, err := f.pulls(mint(t, second, cluster)); err != nil {
			t.Errorf("after two changes, the previous (second) signing CA's certificate was refused: %v", err)
		}
	})
}

// TestClientIssuerSecretAdmitsTheNamedIssuerAndNothingElse runs relay-server
// as the cert-manager overlay does (disableCa, a server certificate from
// the bring-your-own intermediate) with clientIssuerSecret naming that
// intermediate: its client certificates are admitted, those of another CA
// under the same root are not, and a named certificate that is not under the
// relay root is left out with the reason. Without clientIssuerSecret such a
// server admits nothing and says so in /readyz and in its log.
func TestClientIssuerSecretAdmitsTheNamedIssuerAndNothingElse(t *testing.T) {
	const cluster = "cluster-1"
	env := testenv.Start(t, testenv.Options{Names: []string{"mgmt"}})
	c := env.Clusters[0]
	root, err := pki.NewRootCA(pki.Options{CommonName: "byo root", TTL: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	byo, err := root.NewIntermediateCA(pki.Options{CommonName: "byo issuer", TTL: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	other, err := root.NewIntermediateCA(pki.Options{CommonName: "another CA under the root", TTL: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	outsider, err := pki.NewRootCA(pki.Options{CommonName: "not under the relay root", TTL: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	byoSecrets := func(ns string) []corev1.Secret {
		server, err := byo.IssueServer(pki.Options{DNSNames: []string{"*." + ns, config.DefaultAuthority}, TTL: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		key, _ := server.KeyPEM()
		meta := func(name string) metav1.ObjectMeta { return metav1.ObjectMeta{Namespace: ns, Name: name} }
		return []corev1.Secret{
			{ObjectMeta: meta(config.DefaultRootTLSSecret), Data: map[string][]byte{relaysecret.KeyCACert: root.CertPEM()}},
			{ObjectMeta: meta(config.DefaultServerTLSSecret), Data: map[string][]byte{
				relaysecret.KeyTLSCert: server.CertPEM(), relaysecret.KeyTLSKey: key, relaysecret.KeyCACert: server.CAPEM()}},
		}
	}
	byoConfig := func(issuers string) func(*config.Server) {
		return func(s *config.Server) {
			s.DisableCa, s.DisableCaCertGeneration, s.ClientIssuerSecret = true, true, issuers
		}
	}

	t.Run("the named issuer is admitted, another CA under the root is not", func(t *testing.T) {
		const ns = "byo"
		if err := c.Client.Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			t.Fatal(err)
		}
		applySecrets(t, c, byoSecrets(ns)...)
		applySecrets(t, c, corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "relay-client-issuers"},
			Data: map[string][]byte{relaysecret.KeyCACert: pki.EncodeCertificates(byo.Cert, outsider.Cert)}})
		f := startRelay(t, c, ns, byoConfig("relay-client-issuers"))
		f.register(cluster)
		if _, err := f.pulls(mint(t, byo, cluster)); err != nil {
			t.Errorf("Pull with the named issuer's certificate: %v", err)
		}
		if _, err := f.pulls(mint(t, other, cluster)); !refused(err) {
			t.Errorf("Pull with another CA's certificate: %v, want the handshake refused", err)
		}
		if _, err := f.pulls(mint(t, outsider, cluster)); !refused(err) {
			t.Errorf("Pull with a certificate of the named CA that is not under the relay root: %v, want the handshake refused", err)
		}
		err := f.srv.keys.load(t.Context(), c.Client, time.Now(), testr.New(t))
		if err == nil || !strings.Contains(err.Error(), "is not admitted as a client certificate issuer") || !strings.Contains(err.Error(), "relay-client-issuers") {
			t.Errorf("load: %v, want the named CA that is not under the relay root reported with its secret", err)
		}
	})

	t.Run("disableCa without clientIssuerSecret admits nothing and readiness names the setting", func(t *testing.T) {
		const ns = "byo-unset"
		if err := c.Client.Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			t.Fatal(err)
		}
		applySecrets(t, c, byoSecrets(ns)...)
		cfg := config.DefaultServer()
		cfg.Namespace = ns
		byoConfig("")(&cfg)
		mlis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv, err := New(Options{Config: cfg, RESTConfig: c.Config, Log: testr.New(t), Listener: lis, MetricsListener: mlis})
		if err != nil {
			t.Fatal(err)
		}
		runCtx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- srv.Run(runCtx) }()
		defer func() { cancel(); <-done }()
		testenv.Eventually(t, "/readyz names clientIssuerSecret", 30*time.Second, func() error {
			resp, err := http.Get("http://" + mlis.Addr().String() + "/readyz")
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode == http.StatusOK || !strings.Contains(string(body), "clientIssuerSecret") {
				return fmt.Errorf("readyz %s: %s", resp.Status, body)
			}
			return nil
		})
		if err := srv.keys.admitsClients(); err == nil || !strings.Contains(err.Error(), "--client-issuer-secret") {
			t.Errorf("admitsClients: %v, want the setting named", err)
		}
	})
}
