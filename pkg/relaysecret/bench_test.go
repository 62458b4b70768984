package relaysecret_test

import (
	"crypto/x509"
	"encoding/pem"
	"testing"
	"time"

	"github.com/meshrelay/meshrelay/internal/benchpair"
	"github.com/meshrelay/meshrelay/pkg/pki"
	"github.com/meshrelay/meshrelay/pkg/relaysecret"
)

// BenchmarkValidateClient judges a client secret as every consumer does
// (the webhook on each apply, the agent on each change), beside the bare
// stdlib work it builds on: parse the chain and the root and verify it for
// client auth. `make bench` reports the ratio as relaysecret/stdlib.
func BenchmarkValidateClient(b *testing.B) {
	t0 := time.Now()
	for _, k := range []struct {
		name string
		spec pki.KeySpec
	}{{"ecdsa", pki.ECDSAP256}, {"rsa", pki.RSA2048}} {
		root, err := pki.NewRootCA(pki.Options{CommonName: "root", TTL: 24 * time.Hour, Key: k.spec, Now: t0})
		if err != nil {
			b.Fatal(err)
		}
		inter, err := root.NewIntermediateCA(pki.Options{CommonName: "signing", TTL: 12 * time.Hour, Key: k.spec, Now: t0})
		if err != nil {
			b.Fatal(err)
		}
		cli, err := inter.IssueClient(pki.Options{DNSNames: []string{"cluster-1"}, TTL: time.Hour, Key: k.spec, Now: t0})
		if err != nil {
			b.Fatal(err)
		}
		key, err := cli.KeyPEM()
		if err != nil {
			b.Fatal(err)
		}
		data := map[string][]byte{relaysecret.KeyTLSCert: cli.CertPEM(), relaysecret.KeyTLSKey: key, relaysecret.KeyCACert: cli.CAPEM()}
		ctx := relaysecret.Context{Cluster: "cluster-1", Now: t0}
		ours := func() error { _, err := relaysecret.Load(relaysecret.Client, data, "", ctx); return err }
		stdlib := func() error { return stdlibValidate(data[relaysecret.KeyTLSCert], data[relaysecret.KeyCACert], t0) }
		benchpair.Run(b, k.name, "relaysecret", ours, stdlib)
	}
}

// stdlibValidate is the baseline: parse the leaf, the intermediate and the
// root, and verify the chain for client auth.
func stdlibValidate(crt, ca []byte, t0 time.Time) error {
	leafBlock, rest := pem.Decode(crt)
	interBlock, _ := pem.Decode(rest)
	caBlock, _ := pem.Decode(ca)
	leaf, err := x509.ParseCertificate(leafBlock.Bytes)
	if err != nil {
		return err
	}
	inter, err := x509.ParseCertificate(interBlock.Bytes)
	if err != nil {
		return err
	}
	root, err := x509.ParseCertificate(caBlock.Bytes)
	if err != nil {
		return err
	}
	opts := x509.VerifyOptions{Roots: x509.NewCertPool(), Intermediates: x509.NewCertPool(), CurrentTime: t0,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	opts.Roots.AddCert(root)
	opts.Intermediates.AddCert(inter)
	_, err = leaf.Verify(opts)
	return err
}
