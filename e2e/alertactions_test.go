package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	grpccreds "google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/meshrelay/meshrelay/internal/testenv"
	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/pkg/pki"
	"github.com/meshrelay/meshrelay/pkg/relaysecret"
	relayv1 "github.com/meshrelay/meshrelay/relay/api/v1"
)

// What the alert tests do to a mesh: a CA made in the past, a client
// certificate read back, refused handshakes and Bootstraps.

// applyBackdatedCA creates the relay root and signing CA secrets on the
// management cluster as relay-server would have made them age ago, and a
// server certificate made now, and returns the root and the signing CA.
func applyBackdatedCA(t *testing.T, kubectl func(string, ...string) string, age time.Duration) (root, signing *pki.Certified) {
	t.Helper()
	then := time.Now().Add(-age)
	org := []string{relaysecret.Organization}
	root, err := pki.NewRootCA(pki.Options{CommonName: relaysecret.RootCommonName, Organization: org, TTL: relaysecret.RootLifetime, Now: then})
	if err != nil {
		t.Fatal(err)
	}
	signing, err = root.NewIntermediateCA(pki.Options{CommonName: relaysecret.SigningCommonName, Organization: org, TTL: relaysecret.SigningLifetime, Now: then})
	if err != nil {
		t.Fatal(err)
	}
	server, err := root.IssueServer(pki.Options{CommonName: config.DefaultAuthority, DNSNames: []string{"*." + config.DefaultNamespace, config.DefaultAuthority}, TTL: relaysecret.ServerLifetime})
	if err != nil {
		t.Fatal(err)
	}
	var docs []string
	for name, c := range map[string]*pki.Certified{"relay-root-tls-secret": root, "relay-tls-signing-secret": signing, "relay-server-tls-secret": server} {
		keyPEM, err := c.KeyPEM()
		if err != nil {
			t.Fatal(err)
		}
		doc, err := yaml.Marshal(&corev1.Secret{
			TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: config.DefaultNamespace},
			Type:       corev1.SecretTypeTLS,
			Data:       map[string][]byte{relaysecret.KeyTLSCert: c.CertPEM(), relaysecret.KeyTLSKey: keyPEM, relaysecret.KeyCACert: c.CAPEM()},
		})
		if err != nil {
			t.Fatal(err)
		}
		docs = append(docs, string(doc))
	}
	kubectl(strings.Join(docs, "---\n"), "--context", "mgmt", "apply", "-f", "-")
	return root, signing
}

// loadClientCertE reads cluster's relay-client-tls-secret as a TLS
// certificate with its leaf parsed.
func loadClientCertE(ctx context.Context, env *testenv.Env, cluster string) (*tls.Certificate, error) {
	data := map[string][]byte{}
	for _, key := range []string{relaysecret.KeyTLSCert, relaysecret.KeyTLSKey} {
		enc, _, err := env.Kubectl(ctx, "", "--context", cluster, "-n", config.DefaultNamespace, "get", "secret", "relay-client-tls-secret",
			"-o", "jsonpath={.data."+strings.ReplaceAll(key, ".", `\.`)+"}")
		if err != nil {
			return nil, err
		}
		if data[key], err = base64.StdEncoding.DecodeString(enc); err != nil || len(data[key]) == 0 {
			return nil, fmt.Errorf("%s: relay-client-tls-secret has no %s yet (%v)", cluster, key, err)
		}
	}
	c, err := tls.X509KeyPair(data[relaysecret.KeyTLSCert], data[relaysecret.KeyTLSKey])
	if err != nil {
		return nil, fmt.Errorf("%s: relay-client-tls-secret: %w", cluster, err)
	}
	return &c, nil
}

// loadClientCert is loadClientCertE, failing the test on an error.
func loadClientCert(ctx context.Context, t *testing.T, env *testenv.Env, cluster string) *tls.Certificate {
	t.Helper()
	c, err := loadClientCertE(ctx, env, cluster)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// handshakeRefused makes one TLS connection to relay-server at addr with
// cert, as an agent does, and returns nil when the server refuses it.
func handshakeRefused(addr string, roots *x509.CertPool, cert *tls.Certificate) error {
	d := &tls.Dialer{Config: &tls.Config{
		ServerName: config.DefaultAuthority, RootCAs: roots, Certificates: []tls.Certificate{*cert},
		NextProtos: []string{"h2"}, MinVersion: tls.VersionTLS12,
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err == nil {
		defer conn.Close()
		// Under TLS 1.3 the server judges the client certificate after
		// the client's side of the handshake is done: its answer comes
		// with the first read.
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err = conn.Read(make([]byte, 1)); err == nil {
			return errors.New("relay-server accepted a revoked client certificate")
		}
	}
	// crypto/tls reports the peer's alert as a "remote error".
	var alert *net.OpError
	if !errors.As(err, &alert) || alert.Op != "remote error" {
		return fmt.Errorf("handshake with a revoked certificate: %v, want relay-server's TLS alert", err)
	}
	return nil
}

// bootstrapRefused calls Bootstrap for an unregistered cluster with a
// token that is not valid, and returns nil when the server refuses it.
func bootstrapRefused(ctx context.Context, addr string, roots *x509.CertPool) error {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(grpccreds.NewTLS(&tls.Config{RootCAs: roots, ServerName: config.DefaultAuthority, MinVersion: tls.VersionTLS12})))
	if err != nil {
		return err
	}
	defer conn.Close()
	key, err := pki.GenerateKey(pki.ECDSAP256)
	if err != nil {
		return err
	}
	csr, err := pki.NewCSR(key, "cluster-9")
	if err != nil {
		return err
	}
	_, err = relayv1.NewRelayClient(conn).Bootstrap(ctx, &relayv1.BootstrapRequest{Cluster: "cluster-9", Token: "not-a-token-of-cluster-9", Csr: csr})
	if status.Code(err) != codes.Unauthenticated {
		return fmt.Errorf("Bootstrap with a token that is not valid: %v, want Unauthenticated", err)
	}
	return nil
}
