package relaysecret_test

import (
	"crypto/x509"
	"strings"
	"testing"
	"time"

	"github.com/meshrelay/meshrelay/pkg/pki"
	"github.com/meshrelay/meshrelay/pkg/relaysecret"
)

func TestCAKeyExposureSaysWhatAWorkloadClustersCAKeyAllows(t *testing.T) {
	now := time.Now()
	opts := func(cn string) pki.Options { return pki.Options{CommonName: cn, TTL: 24 * time.Hour, Now: now} }
	root, err := pki.NewRootCA(opts("relay root"))
	if err != nil {
		t.Fatal(err)
	}
	signing, _ := root.NewIntermediateCA(opts("relay signing"))
	mesh, _ := root.NewIntermediateCA(opts("mesh ca"))
	otherRoot, _ := pki.NewRootCA(opts("mesh root"))
	separate, _ := otherRoot.NewIntermediateCA(opts("separate mesh ca"))
	istio := func(ca *pki.Certified) *relaysecret.Material {
		data, err := pki.IstioCAData(ca.Key, append([]*x509.Certificate{ca.Cert}, ca.Issuers...), now)
		if err != nil {
			t.Fatal(err)
		}
		m, errs := relaysecret.Decode(relaysecret.IstioCA, data, "")
		if len(errs) > 0 {
			t.Fatal(errs)
		}
		return m
	}
	rootKey, _ := root.KeyPEM()
	rootWithKey, errs := relaysecret.Decode(relaysecret.Root, map[string][]byte{
		relaysecret.KeyCACert: root.CertPEM(), relaysecret.KeyTLSCert: root.CertPEM(), relaysecret.KeyTLSKey: rootKey}, "")
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	rootOnly, _ := relaysecret.Decode(relaysecret.Root, map[string][]byte{relaysecret.KeyCACert: root.CertPEM()}, "")
	for _, c := range []struct {
		name string
		m    *relaysecret.Material
		want string
	}{
		{"the relay root's key lets the cluster serve as relay-server", rootWithKey, "every agent accepts"},
		{"the signing CA as Istio's CA (single) is beyond what pinning refuses", istio(signing), "issuer pinning cannot refuse them"},
		{"another CA under the relay root (two-intermediates) is refused by pinning, except at bootstrap", istio(mesh), "pins the root only"},
		{"a CA under a root of its own (separate-roots) says nothing", istio(separate), ""},
		{"a root without its key says nothing", rootOnly, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := relaysecret.CAKeyExposure(c.m, []*x509.Certificate{root.Cert}, signing.Cert, now)
			if (c.want == "") != (got == "") || !strings.Contains(got, c.want) {
				t.Errorf("CAKeyExposure = %q, want one containing %q", got, c.want)
			}
		})
	}
}
