package trustbundle

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/meshrelay/meshrelay/pkg/pki"
)

// Read returns the certificates of the PEM files in dir, all of them
// together without duplicates, in the order of the file names and then of
// each file's blocks, with their Fingerprint.
//
// Only regular files count, reached through symbolic links as the kubelet
// writes a projected volume (root-ca.crt -> ..data/root-ca.crt); names
// starting with a dot (the kubelet's ..data and its timestamped folders)
// and folders are skipped. A file of only white space holds no certificate,
// as the kubelet writes an optional clusterTrustBundle source that matches
// nothing. Any other file must be PEM certificates, at most pki.MaxPEMBytes
// and pki.MaxChainLength of them: otherwise Read fails naming the file, so
// that a caller keeps the anchors it had.
func Read(dir string) ([]*x509.Certificate, string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, "", fmt.Errorf("failed to read trust bundle folder: %w", err)
	}
	var certs []*x509.Certificate
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			continue
		}
		path := filepath.Join(dir, e.Name())
		found, err := readFile(path)
		if err != nil {
			return nil, "", err
		}
		certs = append(certs, found...)
	}
	certs = Unique(certs)
	return certs, Fingerprint(certs), nil
}

// readFile returns the certificates of one file of the folder: none for a
// file that is not regular, vanished since the folder was listed (the
// kubelet swapped it), or holds only white space.
func readFile(path string) ([]*x509.Certificate, error) {
	info, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("trust bundle file %s: %w", path, err)
	}
	if !info.Mode().IsRegular() {
		return nil, nil
	}
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("trust bundle file %s: %w", path, err)
	}
	defer f.Close()
	// One byte over the bound, so that the decoder names an input too big.
	data, err := io.ReadAll(io.LimitReader(f, pki.MaxPEMBytes+1))
	if err != nil {
		return nil, fmt.Errorf("trust bundle file %s: %w", path, err)
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, nil
	}
	certs, err := pki.DecodeCertificates(data)
	if err != nil {
		return nil, fmt.Errorf("trust bundle file %s is not PEM certificates: %w", path, err)
	}
	return certs, nil
}

// Unique returns certs without the later copies of a certificate that
// appears twice, in their order.
func Unique(certs []*x509.Certificate) []*x509.Certificate {
	seen := make(map[string]bool, len(certs))
	out := make([]*x509.Certificate, 0, len(certs))
	for _, c := range certs {
		fp := pki.Fingerprint(c)
		if seen[fp] {
			continue
		}
		seen[fp] = true
		out = append(out, c)
	}
	return out
}

// Fingerprint identifies a set of certificates: the hex SHA-256 of their
// sorted, distinct SHA-256 fingerprints. Two bundles with the same
// certificates in another order, or one of them twice, have the same
// fingerprint; no certificates at all have "".
func Fingerprint(certs []*x509.Certificate) string {
	if len(certs) == 0 {
		return ""
	}
	fps := make([]string, 0, len(certs))
	for _, c := range certs {
		fps = append(fps, pki.Fingerprint(c))
	}
	slices.Sort(fps)
	fps = slices.Compact(fps)
	sum := sha256.Sum256([]byte(strings.Join(fps, "\n")))
	return hex.EncodeToString(sum[:])
}
