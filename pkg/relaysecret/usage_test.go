package relaysecret_test

import (
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"testing"
	"time"

	"github.com/meshrelay/meshrelay/internal/relaysecrettest"
	"github.com/meshrelay/meshrelay/pkg/pki"
	"github.com/meshrelay/meshrelay/pkg/relaysecret"
)

// TestJudgeExtKeyUsagesIsWhatTheHandshakeVerifies issues a real leaf for
// each list of extended key usages and verifies it as the peer's
// handshake does (crypto/x509 for the kind's usage, as crypto/tls calls
// it): the verdict must pass exactly the leaves that verify, and call only
// the leaf without any extended key usage unrestricted.
func TestJudgeExtKeyUsagesIsWhatTheHandshakeVerifies(t *testing.T) {
	f := relaysecrettest.New(t)
	key, err := pki.GenerateKey(pki.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(f.Root.Cert)
	inter := x509.NewCertPool()
	inter.AddCert(f.Signing.Cert)
	lists := [][]x509.ExtKeyUsage{
		nil,
		{x509.ExtKeyUsageClientAuth},
		{x509.ExtKeyUsageServerAuth},
		{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		{x509.ExtKeyUsageAny},
		{x509.ExtKeyUsageCodeSigning},
		{x509.ExtKeyUsageEmailProtection, x509.ExtKeyUsageTimeStamping},
	}
	for _, kind := range []relaysecret.Kind{relaysecret.Client, relaysecret.Server} {
		want, ok := kind.ExtKeyUsage()
		if !ok {
			t.Fatalf("%s has no usage to verify", kind)
		}
		for i, ekus := range lists {
			t.Run(fmt.Sprintf("%s %v", kind, ekus), func(t *testing.T) {
				tmpl := &x509.Certificate{
					SerialNumber: big.NewInt(int64(100 + i)),
					Subject:      pkix.Name{CommonName: "cluster-1"},
					DNSNames:     []string{"cluster-1"},
					NotBefore:    f.Now.Add(-time.Minute),
					NotAfter:     f.Now.Add(time.Hour),
					KeyUsage:     x509.KeyUsageDigitalSignature,
					ExtKeyUsage:  ekus,
				}
				der, err := x509.CreateCertificate(rand.Reader, tmpl, f.Signing.Cert, key.Public(), f.Signing.Key)
				if err != nil {
					t.Fatal(err)
				}
				leaf, err := x509.ParseCertificate(der)
				if err != nil {
					t.Fatal(err)
				}
				_, verr := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: f.Now, KeyUsages: []x509.ExtKeyUsage{want}})
				verdict := kind.JudgeExtKeyUsages(leaf.ExtKeyUsage)
				if accepted := verdict != relaysecret.UsageRefused; accepted != (verr == nil) {
					t.Fatalf("verdict %v, but the handshake's verification says %v", verdict, verr)
				}
				if unrestricted := verdict == relaysecret.UsageUnrestricted; unrestricted != (len(ekus) == 0) {
					t.Fatalf("verdict %v for usages %v: only a leaf without extended key usages is unrestricted", verdict, ekus)
				}
			})
		}
	}
	if v := relaysecret.Signing.JudgeExtKeyUsages([]x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning}); v != relaysecret.UsageAccepted {
		t.Errorf("a signing CA is verified for no usage, yet its usages get verdict %v", v)
	}
}
