package selfcert

import (
	"crypto/x509"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/meshrelay/meshrelay/pkg/pki"
	"github.com/meshrelay/meshrelay/pkg/relaysecret"
)

// t0 is the fixed time of issue of the material tests.
var t0 = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

func materialOptions() *Options {
	return &Options{
		Namespace: "meshrelay-system", ServiceName: "relay-webhook",
		ExtraDNSNames: []string{"webhook.example.com"},
		IPAddresses:   []net.IP{net.IPv4(127, 0, 0, 1), net.ParseIP("::1")},
		CALifetime:    30 * 24 * time.Hour, ServingLifetime: 9 * 24 * time.Hour,
	}
}

func freshMaterial(t *testing.T, o *Options) *material {
	t.Helper()
	ca, err := newCA(o, t0)
	if err != nil {
		t.Fatal(err)
	}
	serving, err := newServing(o, ca, t0)
	if err != nil {
		t.Fatal(err)
	}
	return newMaterial(ca, nil, serving)
}

func TestTheCAAndServingCertificateAreTheWebhooksOwn(t *testing.T) {
	o := materialOptions()
	mat := freshMaterial(t, o)
	ca, leaf := mat.ca.Cert, mat.serving.Cert
	svc := "relay-webhook.meshrelay-system.svc"
	for _, tc := range []struct {
		what      string
		got, want any
	}{
		{"CA common name", ca.Subject.CommonName, "relay-webhook.meshrelay-system webhook CA 1780315200"},
		{"CA signs leaves only", ca.IsCA && ca.MaxPathLen == 0 && ca.MaxPathLenZero, true},
		{"CA expiry", ca.NotAfter, t0.Add(o.CALifetime)},
		{"serving common name", leaf.Subject.CommonName, svc},
		{"serving DNS names", strings.Join(leaf.DNSNames, ","), svc + "," + svc + ".cluster.local,webhook.example.com"},
		{"serving IP addresses", len(leaf.IPAddresses) == 2 && leaf.IPAddresses[0].Equal(o.IPAddresses[0]) && leaf.IPAddresses[1].Equal(o.IPAddresses[1]), true},
		{"serving expiry", leaf.NotAfter, t0.Add(o.ServingLifetime)},
		{"serving usage", slices.Equal(leaf.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}), true},
		{"signed by the newest CA", mat.signedByNewest(), true},
		{"crypto/tls chain is the leaf alone", len(mat.tls.Certificate) == 1 && mat.tls.Leaf == leaf, true},
	} {
		if tc.got != tc.want {
			t.Errorf("%s = %v, want %v", tc.what, tc.got, tc.want)
		}
	}
	for _, host := range []string{svc, "127.0.0.1", "::1"} {
		if err := leaf.VerifyHostname(host); err != nil {
			t.Errorf("serving certificate does not cover %s: %v", host, err)
		}
	}
	if _, err := pki.VerifyChain(leaf, nil, []*x509.Certificate{ca}, pki.RoleServer, t0); err != nil {
		t.Errorf("serving certificate does not verify to the CA: %v", err)
	}
}

func TestTheServingCertificateNeverOutlivesItsCA(t *testing.T) {
	o := materialOptions()
	o.ServingLifetime = 2 * o.CALifetime
	mat := freshMaterial(t, o)
	if !mat.serving.Cert.NotAfter.Equal(mat.ca.Cert.NotAfter) {
		t.Errorf("serving certificate expires at %s, after its CA's %s", mat.serving.Cert.NotAfter, mat.ca.Cert.NotAfter)
	}
}

func TestMaterialRoundTripsThroughTheSecret(t *testing.T) {
	o := materialOptions()
	older := freshMaterial(t, o)
	mat := freshMaterial(t, o)
	mat = newMaterial(mat.ca, []*x509.Certificate{older.ca.Cert}, older.serving)
	data, err := mat.data()
	if err != nil {
		t.Fatal(err)
	}
	if n := len(mustCAs(t, data[relaysecret.KeyTLSCert])); n != 1 {
		t.Errorf("tls.crt holds %d certificates, want the serving certificate alone", n)
	}
	got, err := decode(&corev1.Secret{Data: data})
	if err != nil {
		t.Fatal(err)
	}
	cas := mustCAs(t, got.bundle())
	if len(cas) != 2 || !cas[0].Equal(mat.ca.Cert) || !cas[1].Equal(older.ca.Cert) {
		t.Errorf("bundle after the round trip has %d CAs, want the newest then the older", len(cas))
	}
	if !got.serving.Cert.Equal(older.serving.Cert) || got.signedByNewest() {
		t.Error("the serving certificate of the older CA did not survive the round trip as one not signed by the newest")
	}
	if err := pki.KeyMatchesCertificate(got.ca.Key, mat.ca.Cert); err != nil {
		t.Errorf("ca.key after the round trip: %v", err)
	}
}

func TestNewRefusesServingNamesACertificateCannotCarry(t *testing.T) {
	for _, tc := range []struct {
		name  string
		extra []string
		want  string
	}{
		{"a DNS-1123 name is accepted", []string{"webhook.example.com"}, ""},
		{"an uppercase name is refused", []string{"Webhook.example.com"}, `use "webhook"`},
		{"an underscore is refused", []string{"relay_webhook"}, `use "relay-webhook"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(Options{Client: fake.NewClientBuilder().Build(), Namespace: "ns", SecretName: "s", ServiceName: "svc", ExtraDNSNames: tc.extra})
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("New = %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("New = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}
