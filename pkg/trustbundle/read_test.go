package trustbundle

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshrelay/meshrelay/pkg/pki"
	"github.com/meshrelay/meshrelay/pkg/trustbundle/trustbundletest"
)

func newRoot(t *testing.T, name string) *x509.Certificate {
	t.Helper()
	r, err := pki.NewRootCA(pki.Options{CommonName: name, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	return r.Cert
}

func names(certs []*x509.Certificate) []string {
	var out []string
	for _, c := range certs {
		out = append(out, c.Subject.CommonName)
	}
	return out
}

func TestReadTakesTheUnionOfTheFolder(t *testing.T) {
	a, b, c := newRoot(t, "a"), newRoot(t, "b"), newRoot(t, "c")
	pemOf := pki.EncodeCertificates
	for _, tc := range []struct {
		name  string
		files map[string][]byte
		// extra is written beside the projected files, not through them.
		extra func(t *testing.T, dir string)
		want  []string
	}{
		{"the root secret's ca.crt and the ClusterTrustBundle together, each root once, in the order of the names",
			map[string][]byte{"root-ca.crt": pemOf(b, a), "bundle.pem": pemOf(a, c)}, nil, []string{"a", "c", "b"}},
		{"an empty bundle.pem (a clusterTrustBundle source that matches nothing) adds nothing",
			map[string][]byte{"root-ca.crt": pemOf(a), "bundle.pem": []byte("\n")}, nil, []string{"a"}},
		{"the kubelet's hidden names and folders are skipped",
			map[string][]byte{"root-ca.crt": pemOf(a)}, func(t *testing.T, dir string) {
				if err := os.WriteFile(filepath.Join(dir, ".hidden.pem"), []byte("not PEM"), 0o644); err != nil {
					t.Fatal(err)
				}
				if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(dir, "sub", "x.pem"), pemOf(c), 0o644); err != nil {
					t.Fatal(err)
				}
			}, []string{"a"}},
		{"a folder with no file has no certificate", map[string][]byte{}, nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := trustbundletest.WriteProjected(dir, tc.files); err != nil {
				t.Fatal(err)
			}
			if tc.extra != nil {
				tc.extra(t, dir)
			}
			certs, fp, err := Read(dir)
			if err != nil {
				t.Fatal(err)
			}
			if got := names(certs); !slices.Equal(got, tc.want) {
				t.Errorf("certificates %v, want %v", got, tc.want)
			}
			if fp != Fingerprint(certs) {
				t.Errorf("fingerprint %q is not Fingerprint of the certificates read", fp)
			}
		})
	}
}

func TestReadSeesEachVersionTheKubeletSwapsIn(t *testing.T) {
	a, b := newRoot(t, "a"), newRoot(t, "b")
	dir := t.TempDir()
	var fps []string
	for _, files := range []map[string][]byte{
		{"root-ca.crt": pki.EncodeCertificates(a)},
		{"root-ca.crt": pki.EncodeCertificates(a, b), "bundle.pem": pki.EncodeCertificates(b)},
		{"bundle.pem": pki.EncodeCertificates(b)},
	} {
		if err := trustbundletest.WriteProjected(dir, files); err != nil {
			t.Fatal(err)
		}
		_, fp, err := Read(dir)
		if err != nil {
			t.Fatal(err)
		}
		fps = append(fps, fp)
	}
	want := []string{Fingerprint([]*x509.Certificate{a}), Fingerprint([]*x509.Certificate{a, b}), Fingerprint([]*x509.Certificate{b})}
	if !slices.Equal(fps, want) {
		t.Errorf("fingerprints of the three versions %v, want %v", fps, want)
	}
}

func TestReadFailsNamingTheFileThatIsNotPEMCertificates(t *testing.T) {
	a := newRoot(t, "a")
	key, err := pki.GenerateKey(pki.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := pki.EncodePrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		content []byte
		want    string
	}{
		{"text that is not PEM", []byte("hello"), "bundle.pem"},
		{"a private key", keyPEM, "bundle.pem"},
		{"a file over the size bound", []byte(strings.Repeat("x", pki.MaxPEMBytes+10)), "more than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := trustbundletest.WriteProjected(dir, map[string][]byte{"root-ca.crt": pki.EncodeCertificates(a), "bundle.pem": tc.content}); err != nil {
				t.Fatal(err)
			}
			certs, _, err := Read(dir)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), filepath.Join(dir, "bundle.pem")) {
				t.Errorf("Read: %d certificates, %v; want an error naming %s", len(certs), err, filepath.Join(dir, "bundle.pem"))
			}
		})
	}
	t.Run("a missing folder", func(t *testing.T) {
		missing := filepath.Join(t.TempDir(), "absent")
		if _, _, err := Read(missing); err == nil || !strings.Contains(err.Error(), missing) {
			t.Errorf("Read: %v, want an error naming %s", err, missing)
		}
	})
}

func TestFingerprintIsOfTheSet(t *testing.T) {
	a, b := newRoot(t, "a"), newRoot(t, "b")
	ab := Fingerprint([]*x509.Certificate{a, b})
	if got := Fingerprint([]*x509.Certificate{b, a, b}); got != ab {
		t.Errorf("another order with a copy: %s, want %s", got, ab)
	}
	if Fingerprint([]*x509.Certificate{a}) == ab || Fingerprint(nil) != "" {
		t.Error("different sets share a fingerprint, or no certificate has one")
	}
}
