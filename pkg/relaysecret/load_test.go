package relaysecret_test

import (
	"strings"
	"testing"
	"time"

	"github.com/meshrelay/meshrelay/internal/relaysecrettest"
	"github.com/meshrelay/meshrelay/pkg/pki"
	"github.com/meshrelay/meshrelay/pkg/relaysecret"
)

func TestLoadNamesTheKeyAtFault(t *testing.T) {
	f := relaysecrettest.New(t)
	issue := func(c *pki.Certified, err error) (crt, key, ca []byte) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		data := f.TLSData(t, c)
		return data[relaysecret.KeyTLSCert], data[relaysecret.KeyTLSKey], data[relaysecret.KeyCACert]
	}
	cliCrt, cliKey, ca := issue(f.Signing.IssueClient(pki.Options{DNSNames: []string{"cluster-1"}, TTL: time.Hour, Now: f.Now}))
	srvCrt, srvKey, _ := issue(f.Signing.IssueServer(pki.Options{DNSNames: []string{"*.gloo-mesh"}, TTL: time.Hour, Now: f.Now}))
	twoCrt, twoKey, _ := issue(f.Signing.IssueClient(pki.Options{DNSNames: []string{"a", "b"}, TTL: time.Hour, Now: f.Now}))
	other, err := pki.NewRootCA(pki.Options{CommonName: "other", TTL: time.Hour, Now: f.Now})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name          string
		kind          relaysecret.Kind
		crt, key, ca  []byte
		authority, cl string
		want          string
	}{
		{"a good client secret passes", relaysecret.Client, cliCrt, cliKey, ca, "", "cluster-1", ""},
		{"a client secret for another cluster names both", relaysecret.Client, cliCrt, cliKey, ca, "", "cluster-2", `client certificate is for cluster "cluster-1", not this cluster "cluster-2"`},
		{"a broken tls.crt is named", relaysecret.Client, []byte("x"), cliKey, ca, "", "cluster-1", "data[tls.crt]: no PEM data found"},
		{"a broken tls.key is named", relaysecret.Client, cliCrt, []byte("x"), ca, "", "cluster-1", "data[tls.key]: no PEM data found"},
		{"a key of another certificate is named", relaysecret.Client, cliCrt, srvKey, ca, "", "cluster-1", "data[tls.key]: private key does not match"},
		{"a broken ca.crt is named", relaysecret.Client, cliCrt, cliKey, []byte("x"), "", "cluster-1", "data[ca.crt]: no PEM data found"},
		{"a missing ca.crt is named", relaysecret.Client, cliCrt, cliKey, nil, "", "cluster-1", "data[ca.crt]: missing"},
		{"a chain to another root is named", relaysecret.Client, cliCrt, cliKey, other.CertPEM(), "", "cluster-1", "data[tls.crt]: client certificate chain does not verify"},
		{"a server certificate as client is refused", relaysecret.Client, srvCrt, srvKey, ca, "", "cluster-1", "incompatible key usage"},
		{"a client certificate with two names is refused", relaysecret.Client, twoCrt, twoKey, ca, "", "a", "exactly one"},
		{"a server secret covering the authority passes", relaysecret.Server, srvCrt, srvKey, ca, "gloo-mesh-mgmt-server.gloo-mesh", "", ""},
		{"a server secret not covering the authority names both", relaysecret.Server, srvCrt, srvKey, ca, "relay.example.com", "",
			`data[tls.crt]: server certificate DNS names [*.gloo-mesh] do not cover the authority "relay.example.com"`},
		{"a client certificate as server is refused", relaysecret.Server, cliCrt, cliKey, ca, "x", "", "incompatible key usage"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := map[string][]byte{relaysecret.KeyTLSCert: tc.crt, relaysecret.KeyTLSKey: tc.key, relaysecret.KeyCACert: tc.ca}
			m, err := relaysecret.Load(tc.kind, data, "", relaysecret.Context{Authority: tc.authority, Cluster: tc.cl, Now: f.Now})
			switch {
			case tc.want == "" && (err != nil || m == nil):
				t.Fatalf("error %v, want the material", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}
