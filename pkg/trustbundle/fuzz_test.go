package trustbundle

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshrelay/meshrelay/pkg/pki"
)

// FuzzRead reads a trust bundle folder holding one file of arbitrary
// bytes. Properties: it never panics; it fails naming the file, or
// returns the certificates without duplicates and their fingerprint; a
// file of only white space holds none.
func FuzzRead(f *testing.F) {
	root, err := pki.NewRootCA(pki.Options{CommonName: "seed", TTL: time.Hour})
	if err != nil {
		f.Fatal(err)
	}
	one := pki.EncodeCertificates(root.Cert)
	for _, seed := range [][]byte{one, append(one, one...), []byte("# roots\n" + string(one)), []byte(" \n"), []byte("junk"), one[:len(one)/2]} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		path := filepath.Join(dir, "bundle.pem")
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		certs, fp, err := Read(dir)
		if err != nil {
			if !strings.Contains(err.Error(), path) {
				t.Fatalf("error %q does not name the file", err)
			}
			return
		}
		if len(Unique(certs)) != len(certs) || fp != Fingerprint(certs) {
			t.Fatalf("%d certificates with duplicates, or fingerprint %q is not theirs", len(certs), fp)
		}
		if strings.TrimSpace(string(data)) == "" && len(certs) > 0 {
			t.Fatal("certificates read from white space")
		}
	})
}
