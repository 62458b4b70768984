package pki

import (
	"crypto"
	"crypto/x509"
	"fmt"
	"strings"
	"testing"
	"time"
)

// t0 is the fixed "now" of the tests.
var t0 = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

// testPKI is a root, an intermediate signing CA and the CA's issuer.
type testPKI struct {
	root, inter *Certified
}

func newTestPKI(t testing.TB, spec KeySpec) testPKI {
	t.Helper()
	root, err := NewRootCA(Options{CommonName: "relay-root", TTL: 10 * 365 * 24 * time.Hour, Key: spec, Now: t0.Add(-time.Hour)})
	if err != nil {
		t.Fatalf("NewRootCA: %v", err)
	}
	inter, err := root.NewIntermediateCA(Options{CommonName: "relay-signing", TTL: 5 * 365 * 24 * time.Hour, Key: spec, Now: t0.Add(-time.Hour)})
	if err != nil {
		t.Fatalf("NewIntermediateCA: %v", err)
	}
	return testPKI{root: root, inter: inter}
}

func mustKey(t testing.TB, spec KeySpec) crypto.Signer {
	t.Helper()
	k, err := GenerateKey(spec)
	if err != nil {
		t.Fatalf("GenerateKey(%s): %v", spec, err)
	}
	return k
}

func mustCSR(t testing.TB, key crypto.Signer, names ...string) *x509.CertificateRequest {
	t.Helper()
	p, err := NewCSR(key, names...)
	if err != nil {
		t.Fatalf("NewCSR: %v", err)
	}
	csr, err := DecodeCSR(p)
	if err != nil {
		t.Fatalf("DecodeCSR: %v", err)
	}
	return csr
}

func mustPEM(t testing.TB, key crypto.Signer) []byte {
	t.Helper()
	p, err := EncodePrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// wantErr fails unless err is non-nil and contains want, or err is nil and
// want is empty.
func wantErr(t testing.TB, err error, want string) {
	t.Helper()
	switch {
	case want == "" && err != nil:
		t.Errorf("unexpected error: %v", err)
	case want != "" && err == nil:
		t.Errorf("no error, want one containing %q", want)
	case want != "" && !strings.Contains(err.Error(), want):
		t.Errorf("error %q does not contain %q", err, want)
	}
}

// checkLeafPEM checks what an issued leaf's PEM would give a relay secret:
// certPEM decodes, keyPEM is its key, and the chain verifies to caPEM for
// role, carrying name (the cluster of a client, the authority a server's
// names cover). The catalogue's Check judges secrets; this only confirms
// the pieces pkg/pki produced fit together.
func checkLeafPEM(certPEM, keyPEM, caPEM []byte, role Role, name string) error {
	certs, err := DecodeCertificates(certPEM)
	if err != nil {
		return err
	}
	key, err := DecodePrivateKey(keyPEM)
	if err != nil {
		return err
	}
	if err := KeyMatchesCertificate(key, certs[0]); err != nil {
		return err
	}
	roots, err := DecodeCertificates(caPEM)
	if err != nil {
		return err
	}
	if _, err := VerifyChain(certs[0], certs[1:], roots, role, t0); err != nil {
		return err
	}
	if role == RoleServer {
		return CoversAuthority(certs[0], name)
	}
	got, err := ClientIdentity(certs[0])
	if err == nil && got != name {
		err = fmt.Errorf("client certificate is for %q, not %q", got, name)
	}
	return err
}
