package server

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshrelay/meshrelay/pkg/pki"
)

func TestDecodeTrustRoot(t *testing.T) {
	now := time.Now()
	root, err := pki.NewRootCA(pki.Options{CommonName: "mesh-root", TTL: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	signing, err := root.NewIntermediateCA(pki.Options{CommonName: "path-len-0", TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	keyPEM := func(c *pki.Certified) []byte {
		b, err := c.KeyPEM()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	other, err := pki.NewRootCA(pki.Options{CommonName: "other", TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	secret := func(data map[string][]byte) *corev1.Secret {
		return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "gloo-mesh", Name: "root"}, Data: data}
	}
	for _, tc := range []struct {
		name string
		data map[string][]byte
		want string
	}{
		{"root-cert.pem and key.pem", map[string][]byte{"root-cert.pem": root.CAPEM(), "key.pem": keyPEM(root)}, ""},
		{"tls.crt and tls.key", map[string][]byte{"tls.crt": root.CAPEM(), "tls.key": keyPEM(root)}, ""},
		{"no certificate", map[string][]byte{"key.pem": keyPEM(root)}, "data[root-cert.pem]: missing, and so is tls.crt"},
		{"no key", map[string][]byte{"root-cert.pem": root.CAPEM()}, "data[key.pem]: missing"},
		{"another key", map[string][]byte{"root-cert.pem": root.CAPEM(), "key.pem": keyPEM(other)}, "data[key.pem]"},
		{"junk", map[string][]byte{"root-cert.pem": []byte("junk"), "key.pem": keyPEM(root)}, "data[root-cert.pem]"},
		{"not self-signed, no ca.crt", map[string][]byte{"tls.crt": signing.CertPEM(), "tls.key": keyPEM(signing)}, "data[ca.crt]: missing: tls.crt is not self-signed"},
		{"a CA of path length 0", map[string][]byte{"tls.crt": signing.CertPEM(), "tls.key": keyPEM(signing), "ca.crt": root.CAPEM()}, "path length 0"},
		{"ca.crt of another root", map[string][]byte{"tls.crt": signing.CertPEM(), "tls.key": keyPEM(signing), "ca.crt": other.CAPEM()}, "does not verify"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := decodeTrustRoot(secret(tc.data), now)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.want == "":
				if !got.Root().Equal(root.Cert) {
					t.Error("decoded root is not the secret's")
				}
			case err == nil || !strings.Contains(err.Error(), tc.want):
				t.Errorf("error %v, want one containing %q", err, tc.want)
			case !strings.Contains(err.Error(), "gloo-mesh/root"):
				t.Errorf("error %q does not name the secret", err)
			}
		})
	}
}
