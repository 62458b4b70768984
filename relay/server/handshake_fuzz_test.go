package server

import (
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/meshrelay/meshrelay/internal/scheme"
	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/pkg/pki"
	"github.com/meshrelay/meshrelay/pkg/relaysecret"
)

// handshakeRig is a keyring loaded, through the code relay-server runs, from
// the secrets EnsureCA generates, and a client key every certificate the
// fuzzer starts from is issued for.
type handshakeRig struct {
	cfg     config.Server
	keys    *keyring
	signing *pki.Certified
	root    *pki.Certified
	key     crypto.Signer
	lis     net.Listener
}

func newHandshakeRig(t testing.TB) *handshakeRig {
	t.Helper()
	ctx := t.Context()
	s, _ := scheme.Scheme()
	c := fake.NewClientBuilder().WithScheme(s).Build()
	r := &handshakeRig{cfg: config.DefaultServer()}
	if err := EnsureCA(ctx, c, &r.cfg, logr.Discard()); err != nil {
		t.Fatal(err)
	}
	r.keys = newKeyring(&r.cfg, newMetrics(prometheus.NewRegistry()))
	if err := r.keys.load(ctx, c, time.Now(), logr.Discard()); err != nil {
		t.Fatalf("load the generated secrets: %v", err)
	}
	for k, ref := range map[relaysecret.Kind]*config.SecretRef{relaysecret.Signing: &r.cfg.SigningTLSSecret, relaysecret.Root: &r.cfg.RootTLSSecret} {
		var sec corev1.Secret
		if err := c.Get(ctx, types.NamespacedName{Namespace: r.cfg.Namespace, Name: ref.Name}, &sec); err != nil {
			t.Fatal(err)
		}
		ca, err := certifiedFromSecret(k, &sec)
		if err != nil {
			t.Fatal(err)
		}
		if k == relaysecret.Signing {
			r.signing = ca
		} else {
			r.root = ca
		}
	}
	key, err := pki.GenerateKey(pki.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	r.key = key
	r.lis, err = net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.lis.Close() })
	return r
}

// issue signs a certificate for the rig's client key with parent.
func (r *handshakeRig) issue(t testing.TB, parent *pki.Certified, dnsNames []string, usage x509.ExtKeyUsage) []byte {
	t.Helper()
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "fuzz"},
		DNSNames:     dnsNames,
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
	}, parent.Cert, r.key.Public(), parent.Key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// handshake runs a TLS handshake over loopback between the server's
// configuration and a client presenting chain, signing with the rig's key.
// It returns the server's view of the connection, or the server's error.
// (An in-process pipe would deadlock: it has no buffer, and a server that
// refuses the client's certificate writes its alert while the client is
// still writing.)
func (r *handshakeRig) handshake(chain [][]byte) (tls.ConnectionState, error) {
	cc, err := net.Dial("tcp", r.lis.Addr().String())
	if err != nil {
		return tls.ConnectionState{}, err
	}
	sc, err := r.lis.Accept()
	if err != nil {
		cc.Close()
		return tls.ConnectionState{}, err
	}
	deadline := time.Now().Add(10 * time.Second)
	_ = sc.SetDeadline(deadline)
	_ = cc.SetDeadline(deadline)
	client := tls.Client(cc, &tls.Config{
		ServerName: r.cfg.Authority,
		RootCAs:    r.roots(),
		NextProtos: []string{"h2"},
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return &tls.Certificate{Certificate: chain, PrivateKey: r.key}, nil
		},
	})
	done := make(chan struct{})
	go func() {
		_ = client.Handshake()
		close(done)
	}()
	server := tls.Server(sc, r.keys.tlsConfig())
	err = server.Handshake()
	state := server.ConnectionState()
	sc.Close()
	<-done
	cc.Close()
	return state, err
}

func (r *handshakeRig) roots() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(r.root.Cert)
	return pool
}

// FuzzClientCertificateHandshake presents arbitrary DER as a client's
// certificate chain in a real TLS handshake with relay-server's listener
// configuration (the keyring loaded from generated secrets, its
// VerifyConnection with issuer pinning). Property: it never panics, and a
// handshake succeeds with a client certificate only when that certificate
// verified, was issued by the signing CA, is for client auth, and names
// exactly one cluster.
func FuzzClientCertificateHandshake(f *testing.F) {
	r := newHandshakeRig(f)
	other, err := r.root.NewIntermediateCA(pki.Options{CommonName: "another CA under the relay root", TTL: time.Hour})
	if err != nil {
		f.Fatal(err)
	}
	good := r.issue(f, r.signing, []string{"cluster-1"}, x509.ExtKeyUsageClientAuth)
	seeds := []struct {
		name        string
		leaf, inter []byte
		admitted    bool
	}{
		{"a client certificate from the signing CA", good, r.signing.Cert.Raw, true},
		{"the same without its intermediate (client roots are the relay root alone)", good, nil, false},
		{"a client certificate from another CA under the root", r.issue(f, other, []string{"cluster-1"}, x509.ExtKeyUsageClientAuth), other.Cert.Raw, false},
		{"a client certificate straight from the root", r.issue(f, r.root, []string{"cluster-1"}, x509.ExtKeyUsageClientAuth), nil, false},
		{"a client certificate with two names", r.issue(f, r.signing, []string{"cluster-1", "cluster-2"}, x509.ExtKeyUsageClientAuth), r.signing.Cert.Raw, false},
		{"a server certificate from the signing CA", r.issue(f, r.signing, []string{"cluster-1"}, x509.ExtKeyUsageServerAuth), r.signing.Cert.Raw, false},
		{"garbage", []byte("not DER"), []byte{0x30, 0x03, 0x02, 0x01, 0x01}, false},
	}
	for _, s := range seeds {
		// The harness must tell the seeds apart, or the property below
		// proves nothing.
		_, err := r.handshake(chainOf(s.leaf, s.inter))
		if (err == nil) != s.admitted {
			f.Fatalf("%s: handshake error %v, want admitted %v", s.name, err, s.admitted)
		}
		f.Add(s.leaf, s.inter)
	}
	f.Fuzz(func(t *testing.T, leaf, inter []byte) {
		state, err := r.handshake(chainOf(leaf, inter))
		if err != nil || len(state.PeerCertificates) == 0 {
			return
		}
		if len(state.VerifiedChains) == 0 {
			t.Fatal("a client certificate was accepted without a verified chain")
		}
		cert := state.VerifiedChains[0][0]
		if err := cert.CheckSignatureFrom(r.signing.Cert); err != nil {
			t.Fatalf("admitted a client certificate the signing CA did not issue (issuer %q): %v", cert.Issuer, err)
		}
		if _, err := pki.ClientIdentity(cert); err != nil {
			t.Fatalf("admitted a client certificate that names no one cluster %v: %v", cert.DNSNames, err)
		}
		if !hasClientAuth(cert) {
			t.Fatalf("admitted a certificate not for client auth: %v", cert.ExtKeyUsage)
		}
	})
}

func chainOf(leaf, inter []byte) [][]byte {
	chain := [][]byte{leaf}
	if len(inter) > 0 {
		chain = append(chain, inter)
	}
	return chain
}

func hasClientAuth(cert *x509.Certificate) bool {
	for _, u := range cert.ExtKeyUsage {
		if u == x509.ExtKeyUsageClientAuth || u == x509.ExtKeyUsageAny {
			return true
		}
	}
	return false
}
