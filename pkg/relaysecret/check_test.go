package relaysecret_test

import (
	"strings"
	"testing"
	"time"

	"github.com/meshrelay/meshrelay/internal/relaysecrettest"
	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/pkg/pki"
	"github.com/meshrelay/meshrelay/pkg/relaysecret"
)

func TestValidateGivesEachCaseItsVerdict(t *testing.T) {
	f := relaysecrettest.New(t)
	for _, c := range f.Cases(t) {
		t.Run(c.Name, func(t *testing.T) {
			m, r := relaysecret.Validate(c.Kind, c.Data, config.DefaultTokenKey, f.Context())
			if r.OK() != c.OK || (m != nil) != c.OK {
				t.Fatalf("OK = %v (material %v), want %v; errors: %v", r.OK(), m != nil, c.OK, r.Err())
			}
		})
	}
}

func TestValidateSaysWhatIsWrong(t *testing.T) {
	f := relaysecrettest.New(t)
	byName := map[string]relaysecrettest.Case{}
	for _, c := range f.Cases(t) {
		byName[c.Name] = c
	}
	for name, want := range map[string]string{
		"a client certificate with an RSA-1024 key is refused":               "data[tls.crt]: certificate \"cluster-1\": RSA key of 1024 bits is too weak: use RSA 2048 bits or more, or ECDSA P-256",
		"a client certificate for another cluster is refused":                `client certificate is for cluster "cluster-2", not this cluster "cluster-1"`,
		"a client certificate without ca.crt, from another root, is refused": "the secret has no ca.crt, and the chain does not verify to relay-root-tls-secret's ca.crt",
		"a client key that belongs to another certificate is refused":        "data[tls.key]: private key does not match the certificate",
		"a client certificate from another root is refused":                  "does not chain to relay-root-tls-secret's ca.crt",
		"a server certificate that does not cover the authority is refused":  `do not cover the authority "gloo-mesh-mgmt-server.gloo-mesh"`,
		"an expired client certificate is refused":                           "certificate expired at",
		"an empty token is refused":                                          "data[token]: missing or empty",
	} {
		c, ok := byName[name]
		if !ok {
			t.Fatalf("no case %q", name)
		}
		_, r := relaysecret.Validate(c.Kind, c.Data, config.DefaultTokenKey, f.Context())
		if err := r.Err(); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want it to say %q", name, err, want)
		}
	}
}

func TestValidateNamesAnUnderscoreFirst(t *testing.T) {
	f := relaysecrettest.New(t)
	data := f.TLSData(t, mustClientWithName(t, f, "cluster-1"))
	data[relaysecret.KeyTLSKey] = []byte("not a key")
	// An underscore cannot be issued through pkg/pki, so the check is made
	// on a certificate whose name is rewritten after decoding.
	m, errs := relaysecret.Decode(relaysecret.Client, data, "")
	if len(errs) == 0 || m.Cert == nil {
		t.Fatalf("decode: errs %v, cert %v; want a key error with the certificate decoded", errs, m.Cert)
	}
	m.Cert.DNSNames = []string{"cluster_1"}
	r := relaysecret.Check(m, f.Context())
	if len(r.Errs) == 0 || !strings.Contains(r.Errs[0].Detail, `use "cluster-1"`) {
		t.Fatalf("first error %v, want the underscore named with its fix", r.Errs)
	}
}

func TestTokenShorterThanTheMinimumIsAWarning(t *testing.T) {
	_, r := relaysecret.Validate(relaysecret.Token, map[string][]byte{"token": []byte("short")}, "token", relaysecret.Context{})
	if !r.OK() || len(r.Warnings) != 1 || !strings.Contains(r.Warnings[0], "5 bytes") {
		t.Fatalf("result %+v, want usable with one warning naming the length", r)
	}
}

func TestNamesKnowEveryConfiguredSecret(t *testing.T) {
	cfg := config.DefaultWebhook()
	cfg.Namespace = "relay"
	cfg.TLSSecret.Name = "my-server"
	names := relaysecret.WebhookNames(&cfg)
	for _, k := range []relaysecret.Kind{relaysecret.Root, relaysecret.Signing, relaysecret.Server, relaysecret.Client, relaysecret.Token, relaysecret.IstioCA} {
		got, ok := names.KindOf(names.Of(k))
		if !ok || got != k {
			t.Errorf("KindOf(Of(%s)) = %v, %v", k, got, ok)
		}
	}
	if k, ok := names.KindOf(names.Server); !ok || k != relaysecret.Server || names.Server.Name != "my-server" || names.Server.Namespace != "relay" {
		t.Errorf("server secret %v is %v, %v", names.Server, k, ok)
	}
	other := names.Server
	other.Name = "something-else"
	if _, ok := names.KindOf(other); ok {
		t.Errorf("%v is taken for a relay secret", other)
	}
}

func mustClientWithName(t *testing.T, f *relaysecrettest.Fixture, name string) *pki.Certified {
	t.Helper()
	c, err := f.Signing.IssueClient(pki.Options{DNSNames: []string{name}, TTL: time.Hour, Now: f.Now})
	if err != nil {
		t.Fatal(err)
	}
	return c
}
