package server

import (
	"bytes"
	"crypto/x509"
	"strings"
	"testing"
	"time"

	"github.com/meshrelay/meshrelay/pkg/pki"
)

func TestSignIntermediate(t *testing.T) {
	now := time.Now()
	root, err := pki.NewRootCA(pki.Options{CommonName: "mesh-root", TTL: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	p := &trustPolicy{name: "mesh", signer: root, rootPEM: root.CAPEM(), rootSHA256: pki.Fingerprint(root.Cert), ttl: time.Hour, autoRestart: true}
	key, err := pki.GenerateKey(pki.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	good, err := pki.NewCSR(key, pki.IstiodDNSName)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		csr  []byte
		want string
	}{
		{"a CSR from the cluster is signed under the policy's root for its TTL", good, ""},
		{"a CSR over the size limit is refused", append(bytes.Repeat([]byte(" "), maxCSRBytes), good...), "CSR too large"},
		{"junk is refused as a certificate request", []byte("junk"), "certificate request:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			issued, in, err := signIntermediate(p, "cluster-1", tc.csr, now)
			if tc.want != "" {
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Errorf("error %v, want one containing %q", err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatalf("signIntermediate: %v", err)
			}
			if _, err := pki.VerifyChain(issued.Cert, nil, []*x509.Certificate{root.Cert}, pki.RoleSigningCA, now); err != nil {
				t.Errorf("intermediate does not chain to the policy's root: %v", err)
			}
			if got := issued.Cert.NotAfter.Sub(now); got > p.ttl || got < p.ttl-time.Minute {
				t.Errorf("intermediate lives %s from now, want the policy's %s", got, p.ttl)
			}
			ii := in.GetIntermediateIssued()
			if ii.GetPolicy() != "mesh" || !bytes.Equal(ii.GetCertificateChain(), issued.CertPEM) || !bytes.Equal(ii.GetRootCertificate(), p.rootPEM) || !ii.GetAutoRestartPods() {
				t.Errorf("instruction %v does not carry the policy, chain, root and autoRestartPods", in)
			}
		})
	}
}
