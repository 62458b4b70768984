package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	grpccreds "google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshrelay/meshrelay/internal/relayctl/certgen"
	"github.com/meshrelay/meshrelay/internal/testenv"
	meshv1alpha1 "github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
	"github.com/meshrelay/meshrelay/pkg/bootstraptoken"
	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/pkg/pki"
	"github.com/meshrelay/meshrelay/pkg/relaysecret"
	relayv1 "github.com/meshrelay/meshrelay/relay/api/v1"
)

// twoIntermediates is relayctl gen's two-intermediates architecture for
// one workload cluster, decoded: the relay root, the signing CA, the mesh CA
// whose key the workload cluster's istio-system/cacerts holds, and the
// cluster's client certificate from the signing CA.
type twoIntermediates struct {
	root, signing, meshCA *pki.Certified
	client                *tls.Certificate
}

func generateTwoIntermediates(t *testing.T, cluster string) *twoIntermediates {
	t.Helper()
	sets, err := certgen.Generate(certgen.Options{Architecture: certgen.TwoIntermediates, Clusters: []string{cluster}})
	if err != nil {
		t.Fatal(err)
	}
	decode := func(k relaysecret.Kind, s corev1.Secret) *relaysecret.Material {
		m, errs := relaysecret.Decode(k, s.Data, "")
		if len(errs) > 0 {
			t.Fatalf("generated secret %s: %s", s.Name, relaysecret.Message(errs))
		}
		return m
	}
	g := &twoIntermediates{}
	for _, s := range append(sets[0].Secrets, sets[1].Secrets...) {
		switch {
		case s.Name == config.DefaultSigningTLSSecret:
			g.signing = decode(relaysecret.Signing, s).Certified()
		case s.Name == config.DefaultIstioCASecret:
			g.meshCA = decode(relaysecret.IstioCA, s).Certified()
		case s.Name == config.DefaultClientTLSSecret:
			g.client = decode(relaysecret.Client, s).TLSCertificate()
		case s.Name == config.DefaultRootTLSSecret && s.Namespace == config.DefaultNamespace && len(s.Data[relaysecret.KeyTLSKey]) > 0:
			root := decode(relaysecret.Root, s)
			g.root = &pki.Certified{Cert: root.Cert, Key: root.Key}
		}
	}
	if g.root == nil || g.root.Key == nil || g.signing == nil || g.meshCA == nil || g.client == nil {
		t.Fatal("relayctl gen two-intermediates made no root key, signing CA, mesh CA or client certificate")
	}
	return g
}

// stubRelay serves the relay API over TLS on loopback with cert, answering
// every call Unimplemented: a call that gets that far passed the agent's
// handshake checks.
func stubRelay(t *testing.T, cert *pki.Certified) string {
	t.Helper()
	addr, _ := recordingStubRelay(t, cert)
	return addr
}

// recordingStubRelay is stubRelay that also counts the handshakes in which
// the agent presented a client certificate.
func recordingStubRelay(t *testing.T, cert *pki.Certified) (string, *atomic.Int32) {
	t.Helper()
	var presented atomic.Int32
	pair, lis := servingOnLoopback(t, cert)
	gs := grpc.NewServer(grpc.Creds(grpccreds.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{pair}, ClientAuth: tls.RequestClientCert, MinVersion: tls.VersionTLS12,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) > 0 {
				presented.Add(1)
			}
			return nil
		},
	})))
	relayv1.RegisterRelayServer(gs, relayv1.UnimplementedRelayServer{})
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	return lis.Addr().String(), &presented
}

// TestAgentPinsTheServerCertificatesIssuer dials, as relay-agent does,
// servers whose certificates all chain to the relay root, and shows which
// the agent accepts once it holds a client certificate from the signing
// CA: one from that CA or straight from the root, never one that the mesh
// CA key of a workload cluster mints for the authority. Go's own checks
// (serverAuth, a name covering the authority) still apply, and before its
// first certificate the agent pins the root only.
func TestAgentPinsTheServerCertificatesIssuer(t *testing.T) {
	g := generateTwoIntermediates(t, "cluster-1")
	server := func(ca *pki.Certified, role pki.Role, names ...string) *pki.Certified {
		issue := ca.IssueServer
		if role == pki.RoleClient {
			issue = ca.IssueClient
		}
		c, err := issue(pki.Options{DNSNames: names, TTL: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	authority := config.DefaultAuthority
	cases := []struct {
		name string
		cert *pki.Certified
		// bootstrap dials with no client certificate yet.
		bootstrap bool
		// want is empty when the handshake passes, else part of the error.
		want []string
	}{
		{name: "a server certificate from the signing CA that issued the agent's is accepted", cert: server(g.signing, pki.RoleServer, authority)},
		{name: "a server certificate the relay root signs directly is accepted", cert: server(g.root, pki.RoleServer, authority)},
		{name: "a server certificate the workload cluster's mesh CA key mints is refused, naming both issuers",
			cert: server(g.meshCA, pki.RoleServer, authority), want: []string{"meshrelay-mesh-ca", relaysecret.SigningCommonName, "issued by", "delete secret " + config.DefaultNamespace + "/" + config.DefaultClientTLSSecret}},
		{name: "a server certificate whose names miss the authority is refused", cert: server(g.signing, pki.RoleServer, "relay.example.com"), want: []string{"relay.example.com"}},
		{name: "a certificate without serverAuth is refused", cert: server(g.signing, pki.RoleClient, authority), want: []string{"usage"}},
		{name: "before its first certificate the agent pins the root only, and accepts the mesh CA's", cert: server(g.meshCA, pki.RoleServer, authority), bootstrap: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := config.DefaultAgent()
			cfg.Cluster, cfg.ServerAddress = "cluster-1", stubRelay(t, c.cert)
			var p *Provider
			if !c.bootstrap {
				p = NewProvider()
				p.Set(g.client)
			}
			conn, err := dial(&cfg, fixedRoots(g.root.Cert), p)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			_, err = relayv1.NewRelayClient(conn).Renew(ctx, &relayv1.RenewRequest{})
			switch {
			case len(c.want) == 0 && status.Code(err) != codes.Unimplemented:
				t.Errorf("Renew: %v, want the handshake to pass (Unimplemented from the stub)", err)
			case len(c.want) > 0 && status.Code(err) != codes.Unavailable:
				t.Errorf("Renew: %v, want the handshake refused (Unavailable)", err)
			}
			for _, w := range c.want {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("Renew: %v, want an error containing %q", err, w)
				}
			}
		})
	}
}

// TestServerPinFindsTheClientCertificatesIssuer: an
// agent whose tls.crt holds its certificate alone still finds its issuer
// among the roots (a certificate the root signs, as an agent with the root
// key issues itself); one that cannot find it says how to fix tls.crt.
func TestServerPinFindsTheClientCertificatesIssuer(t *testing.T) {
	g := generateTwoIntermediates(t, "cluster-1")
	self, err := g.root.IssueClient(pki.Options{DNSNames: []string{"cluster-1"}, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	leafOnly := func(c *pki.Certified) *tls.Certificate {
		return &tls.Certificate{Certificate: [][]byte{c.Cert.Raw}, Leaf: c.Cert}
	}
	got, err := clientIssuer(leafOnly(self), []*x509.Certificate{g.root.Cert})
	if err != nil || !got.Equal(g.root.Cert) {
		t.Errorf("issuer of a root-signed certificate: %v, %v; want the root", got, err)
	}
	got, err = clientIssuer(g.client, []*x509.Certificate{g.root.Cert})
	if err != nil || !pki.SameCA(got, g.signing.Cert) {
		t.Errorf("issuer of relayctl gen's client certificate: %v, %v; want the signing CA", got, err)
	}
	clientLeaf, _ := x509.ParseCertificate(g.client.Certificate[0])
	if _, err := clientIssuer(&tls.Certificate{Certificate: [][]byte{clientLeaf.Raw}, Leaf: clientLeaf}, []*x509.Certificate{g.root.Cert}); err == nil || !strings.Contains(err.Error(), "tls.crt") {
		t.Errorf("a client certificate without its intermediate: %v, want an error saying to put the issuer in tls.crt", err)
	}
}

// TestServerPinWorksOutTheIssuerOncePerCertificate: the pin of an agent's
// connections finds the issuer of the provider's certificate at the first
// handshake and keeps it for the next ones (the very certificate, not a
// fresh parse of tls.crt), until the provider holds another certificate,
// whose issuer it then pins.
func TestServerPinWorksOutTheIssuerOncePerCertificate(t *testing.T) {
	g := generateTwoIntermediates(t, "cluster-1")
	self, err := g.root.IssueClient(pki.Options{DNSNames: []string{"cluster-1"}, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	provider := NewProvider()
	pin := providerPin(fixedRoots(g.root.Cert), provider, ns+"/relay-client-tls-secret")
	if got, err := pin.expected(); got != nil || err != nil {
		t.Fatalf("with no certificate the pin expects %s, %v; want the roots only", pki.CAName(got), err)
	}
	provider.Set(g.client)
	first, err := pin.expected()
	if err != nil || !pki.SameCA(first, g.signing.Cert) {
		t.Fatalf("pin expects %s, %v; want the signing CA", pki.CAName(first), err)
	}
	if again, _ := pin.expected(); again != first {
		t.Errorf("the next handshake worked the issuer out again (%p, then %p), want the one of the first", first, again)
	}
	provider.Set(&tls.Certificate{Certificate: [][]byte{self.Cert.Raw}, Leaf: self.Cert})
	if got, err := pin.expected(); err != nil || !got.Equal(g.root.Cert) {
		t.Errorf("after the provider's certificate changed the pin expects %s, %v; want the root that issued the new one", pki.CAName(got), err)
	}
}

// TestBootstrapPinsTheIssuerOfThePreviousCertificate: an agent that
// bootstraps while its client secret still holds a certificate (expired,
// or valid but revoked at the server and replaced by relayctl register's
// fresh token) knows which CA issued it, and pins the relay server's
// issuer to that CA or the root on the Bootstrap connection too, without
// presenting the certificate: a server certificate that a workload
// cluster's mesh CA key mints is refused before the token is sent, and the
// refusal says how to recover when the signing CA really changed. Only an
// agent with no client secret at all still pins the root alone. The
// secrets are read from a real kube-apiserver, as relay-agent does.
func TestBootstrapPinsTheIssuerOfThePreviousCertificate(t *testing.T) {
	g := generateTwoIntermediates(t, "cluster-1")
	env := testenv.Start(t, testenv.Options{Names: []string{"workload"}})
	kc := env.Cluster("workload").Client
	if err := kc.Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	issue := func(ca *pki.Certified, role pki.Role, now time.Time, names ...string) *pki.Certified {
		t.Helper()
		f := ca.IssueServer
		if role == pki.RoleClient {
			f = ca.IssueClient
		}
		c, err := f(pki.Options{DNSNames: names, TTL: time.Hour, Now: now})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	now := time.Now()
	authority := config.DefaultAuthority
	fromSigning, fromMeshCA := issue(g.signing, pki.RoleServer, now, authority), issue(g.meshCA, pki.RoleServer, now, authority)
	expired := issue(g.signing, pki.RoleClient, now.Add(-3*time.Hour), "cluster-1")
	valid := issue(g.signing, pki.RoleClient, now, "cluster-1")

	cfg := config.DefaultAgent()
	cfg.Cluster, cfg.Namespace = "cluster-1", ns
	store := newSecretStore(&cfg)
	store.reader, store.writer = kc, kc
	put := func(name string, data map[string][]byte, annotations map[string]string) {
		t.Helper()
		sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Annotations: annotations}, Data: data}
		var cur corev1.Secret
		if err := kc.Get(t.Context(), client.ObjectKeyFromObject(sec), &cur); err == nil {
			cur.Data, cur.Annotations = data, annotations
			if err := kc.Update(t.Context(), &cur); err != nil {
				t.Fatal(err)
			}
			return
		}
		if err := kc.Create(t.Context(), sec); err != nil {
			t.Fatal(err)
		}
	}
	put(cfg.RootTLSSecret.Name, map[string][]byte{relaysecret.KeyCACert: pki.EncodeCertificates(g.root.Cert)}, nil)
	put(cfg.TokenSecret.Name, map[string][]byte{cfg.TokenSecret.Key: []byte("a-fresh-bootstrap-token-of-relayctl-register")}, nil)
	clientSecret := func(c *pki.Certified) map[string][]byte {
		t.Helper()
		key, err := c.KeyPEM()
		if err != nil {
			t.Fatal(err)
		}
		return map[string][]byte{relaysecret.KeyTLSCert: c.CertPEM(), relaysecret.KeyTLSKey: key, relaysecret.KeyCACert: pki.EncodeCertificates(g.root.Cert)}
	}
	withoutClientSecret := func() {
		t.Helper()
		err := kc.Delete(t.Context(), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: cfg.ClientTLSSecret.Name}})
		if err != nil && !apierrors.IsNotFound(err) {
			t.Fatal(err)
		}
	}
	clientRef := ns + "/" + cfg.ClientTLSSecret.Name

	cases := []struct {
		name   string
		client *pki.Certified // nil: no client secret
		// fresh records another token in the client secret, as after relayctl register.
		fresh  bool
		server *pki.Certified
		// want is empty when Bootstrap reaches the server, else part of the refusal.
		want []string
	}{
		{name: "an agent whose certificate expired refuses a server certificate from the mesh CA, naming both issuers and the way back",
			client: expired, server: fromMeshCA,
			want: []string{"meshrelay-mesh-ca", relaysecret.SigningCommonName, "previous client certificate (secret " + clientRef + ")", "delete secret " + clientRef}},
		{name: "an agent whose certificate expired bootstraps with a server certificate from the CA that issued it",
			client: expired, server: fromSigning},
		{name: "an agent with a fresh token and a valid (revoked) certificate refuses a server certificate from the mesh CA",
			client: valid, fresh: true, server: fromMeshCA, want: []string{"meshrelay-mesh-ca", "previous client certificate"}},
		{name: "an agent with a fresh token and a valid (revoked) certificate bootstraps with a server certificate from the signing CA",
			client: valid, fresh: true, server: fromSigning},
		{name: "an agent with no client secret knows no issuer and pins the root only",
			server: fromMeshCA},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.client == nil {
				withoutClientSecret()
			} else {
				ann := map[string]string{}
				if c.fresh {
					ann[meshv1alpha1.BootstrapTokenUsedAnnotation] = bootstraptoken.Hash("the-token-of-the-first-registration")
				}
				put(cfg.ClientTLSSecret.Name, clientSecret(c.client), ann)
			}
			addr, presented := recordingStubRelay(t, c.server)
			cfg.ServerAddress = addr
			m, err := store.read(t.Context(), cfg.Cluster, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			if (c.client == valid) != (m.client != nil) || c.fresh != m.freshToken {
				t.Fatalf("agent material: client %v (%v), fresh token %v; not what the test wrote", m.client != nil, m.clientOK, m.freshToken)
			}
			// The provider holds the certificate, as it did before it
			// expired or was revoked; Bootstrap must not present it.
			provider := NewProvider()
			if c.client != nil {
				d, errs := relaysecret.Decode(relaysecret.Client, clientSecret(c.client), "")
				if len(errs) > 0 {
					t.Fatal(relaysecret.Message(errs))
				}
				provider.Set(d.TLSCertificate())
			}
			iss := newIssuer(issuerOptions{Config: &cfg, Secrets: store, Provider: provider, Clock: clock.RealClock{}})
			_, pinned, err := iss.bootstrapPin(t.Context(), fixedRoots(m.roots...))
			switch {
			case err != nil:
				t.Fatal(err)
			case c.client == nil && pinned != nil:
				t.Errorf("with no client secret the agent pins %s, want the root only", pki.CAName(pinned))
			case c.client != nil && !pki.SameCA(pinned, g.signing.Cert):
				t.Errorf("the agent pins %s, want the signing CA that issued its previous certificate", pki.CAName(pinned))
			}
			_, err = iss.obtain(t.Context(), m)
			switch {
			case len(c.want) == 0 && status.Code(err) != codes.Unimplemented:
				t.Errorf("obtain: %v, want Bootstrap to reach the server (Unimplemented from the stub)", err)
			case len(c.want) > 0 && status.Code(err) != codes.Unavailable:
				t.Errorf("obtain: %v, want the handshake refused (Unavailable)", err)
			}
			for _, w := range c.want {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("obtain: %v, want an error containing %q", err, w)
				}
			}
			t.Logf("obtain: %v", err)
			if n := presented.Load(); n != 0 {
				t.Errorf("the agent presented a client certificate in %d Bootstrap handshakes, want none", n)
			}
		})
	}
}

// fixedRoots returns trust anchors that never change.
func fixedRoots(roots ...*x509.Certificate) func() []*x509.Certificate {
	return func() []*x509.Certificate { return roots }
}

// servingOnLoopback returns cert with its key as a TLS certificate to
// serve, and a listener on a free loopback port.
func servingOnLoopback(t *testing.T, cert *pki.Certified) (tls.Certificate, net.Listener) {
	t.Helper()
	keyPEM, err := cert.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(cert.CertPEM(), keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return pair, lis
}
