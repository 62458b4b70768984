package relaysecret_test

import (
	"testing"

	"github.com/meshrelay/meshrelay/internal/relaysecrettest"
	"github.com/meshrelay/meshrelay/pkg/relaysecret"
)

// FuzzValidate judges arbitrary secret data as every kind, seeded with the
// shared table. Validate must not panic, must return material exactly when
// it finds no error, and every error must sit at a path under data.
func FuzzValidate(f *testing.F) {
	fx := relaysecrettest.New(f)
	for _, c := range fx.Cases(f) {
		f.Add(c.Data[relaysecret.KeyTLSCert], c.Data[relaysecret.KeyTLSKey], c.Data[relaysecret.KeyCACert], c.Data["token"])
	}
	kinds := []relaysecret.Kind{relaysecret.Root, relaysecret.Signing, relaysecret.Server, relaysecret.Client, relaysecret.Token, relaysecret.IstioCA, relaysecret.TrustRoot}
	f.Fuzz(func(t *testing.T, crt, key, ca, token []byte) {
		data := map[string][]byte{
			relaysecret.KeyTLSCert: crt, relaysecret.KeyTLSKey: key, relaysecret.KeyCACert: ca, "token": token,
			"ca-cert.pem": crt, "ca-key.pem": key, "cert-chain.pem": crt, "root-cert.pem": ca, "key.pem": key,
		}
		for _, k := range kinds {
			m, r := relaysecret.Validate(k, data, "token", fx.Context())
			if (m != nil) != r.OK() {
				t.Fatalf("%s: material %v with errors %v", k, m != nil, r.Errs)
			}
			for _, e := range r.Errs {
				if e.Field != "data" && (len(e.Field) < 5 || e.Field[:5] != "data[") {
					t.Fatalf("%s: error at %q, not under data", k, e.Field)
				}
			}
		}
	})
}
