package server

import (
	"context"
	"crypto/x509"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshrelay/meshrelay/internal/testenv"
	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/pkg/pki"
	"github.com/meshrelay/meshrelay/pkg/relaysecret"
	relayv1 "github.com/meshrelay/meshrelay/relay/api/v1"
)

// TestInsecureServerNeverSignsWithTheRealCA starts an insecure server
// beside a real CA (relay-tls-signing-secret and its root present): what
// it signs, on bootstrap and on renewal, chains to an in-memory CA of its
// own, never to the stored one, and the stored secrets are left as they
// were.
func TestInsecureServerNeverSignsWithTheRealCA(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Names: []string{"mgmt"}})
	c := env.Clusters[0]
	ctx := t.Context()
	const ns = "gloo-mesh"
	if err := c.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	real := config.DefaultServer()
	real.Namespace = ns
	if err := EnsureCA(ctx, c.Client, &real, testr.New(t)); err != nil {
		t.Fatalf("making the real CA: %v", err)
	}
	f := startRelay(t, c, ns, func(s *config.Server) {
		s.Insecure = true
		fastSigning(s)
	})
	signingBefore := f.secret(real.SigningTLSSecret.Name)
	signing, errs := relaysecret.Decode(relaysecret.Signing, signingBefore.Data, "")
	if len(errs) > 0 {
		t.Fatalf("the real signing secret: %s", relaysecret.Message(errs))
	}
	realRoots := x509.NewCertPool()
	realRoots.AddCert(signing.Certified().Root())

	conn, err := grpc.NewClient(f.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	rc := relayv1.NewRelayClient(conn)
	f.register("cluster-1")

	// notTheRealCA checks a signed chain: issued by the in-memory CA, and
	// verifying to nothing the real root anchors.
	notTheRealCA := func(t *testing.T, resp *relayv1.CertificateResponse) {
		t.Helper()
		chain, err := pki.DecodeCertificates(resp.GetCertificateChain())
		if err != nil {
			t.Fatalf("returned chain: %v", err)
		}
		leaf := chain[0]
		if pki.SameCA(signing.Cert, chain[len(chain)-1]) || string(leaf.AuthorityKeyId) == string(signing.Cert.SubjectKeyId) {
			t.Fatalf("insecure mode signed with the real signing CA %q", signing.Cert.Subject.CommonName)
		}
		inter := x509.NewCertPool()
		for _, c := range chain[1:] {
			inter.AddCert(c)
		}
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: realRoots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err == nil {
			t.Fatal("a certificate signed in insecure mode verifies to the real root")
		}
		if got := leaf.Issuer.CommonName; got != "meshrelay insecure-mode signing CA (in memory)" {
			t.Errorf("issuer %q, want the in-memory CA", got)
		}
		if len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != "cluster-1" {
			t.Errorf("DNS names %v, want [cluster-1]", leaf.DNSNames)
		}
	}

	t.Run("bootstrap is signed by the in-memory CA", func(t *testing.T) {
		resp, err := f.tryBootstrap(rc, "cluster-1", f.token())
		if err != nil {
			t.Fatalf("Bootstrap: %v", err)
		}
		notTheRealCA(t, resp)
	})
	t.Run("renewal is signed by the in-memory CA", func(t *testing.T) {
		key, _ := pki.GenerateKey(pki.ECDSAP256)
		csr, _ := pki.NewCSR(key, "cluster-1")
		rctx := metadata.AppendToOutgoingContext(ctx, InsecureClusterHeader, "cluster-1")
		resp, err := rc.Renew(rctx, &relayv1.RenewRequest{Csr: csr})
		if err != nil {
			t.Fatalf("Renew: %v", err)
		}
		notTheRealCA(t, resp)
	})
	t.Run("a stream's first instruction is an empty one, where TLS would give the trust bundle", func(t *testing.T) {
		// The agent waits for a first message to know the connection
		// works; without one it would reconnect every 30 s.
		sctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(ctx, InsecureClusterHeader, "cluster-1"), 10*time.Second)
		defer cancel()
		connect, err := rc.Connect(sctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := connect.Send(&relayv1.PushMessage{Message: &relayv1.PushMessage_Status{Status: &relayv1.AgentStatus{AgentVersion: "test"}}}); err != nil {
			t.Fatal(err)
		}
		pull, err := rc.Pull(sctx, &relayv1.PullRequest{Replica: "agent-0"})
		if err != nil {
			t.Fatal(err)
		}
		for name, recv := range map[string]func() (*relayv1.Instruction, error){"Connect": connect.Recv, "Pull": pull.Recv} {
			if in, err := recv(); err != nil || in.GetInstruction() != nil {
				t.Errorf("%s: first instruction %v, %v; want an empty one", name, in, err)
			}
		}
	})
	t.Run("the stored CA is left as it was", func(t *testing.T) {
		if after := f.secret(real.SigningTLSSecret.Name); after.ResourceVersion != signingBefore.ResourceVersion {
			t.Errorf("relay-tls-signing-secret changed: resourceVersion %s, then %s", signingBefore.ResourceVersion, after.ResourceVersion)
		}
		if m := f.metric(`relay_certificate_expiry_timestamp_seconds{certificate="intermediate"}`); m != "" {
			t.Errorf("the signing secret was loaded: %s", m)
		}
	})
}
