package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	grpccreds "google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"

	"github.com/meshrelay/meshrelay/internal/relayctl/certgen"
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
	gs := grpc.NewServer(grpc.Creds(grpccreds.NewTLS(&tls.Config{Certificates: []tls.Certificate{pair}, ClientAuth: tls.RequestClientCert, MinVersion: tls.VersionTLS12})))
	relayv1.RegisterRelayServer(gs, relayv1.UnimplementedRelayServer{})
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	return lis.Addr().String()
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
			cert: server(g.meshCA, pki.RoleServer, authority), want: []string{"meshrelay-mesh-ca", relaysecret.SigningCommonName, "issued by"}},
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
			conn, err := dial(&cfg, []*x509.Certificate{g.root.Cert}, p)
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
