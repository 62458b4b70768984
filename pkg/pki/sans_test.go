package pki

import (
	"crypto/x509"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"
)

func TestCheckDNSName(t *testing.T) {
	for _, tc := range []struct {
		name, input string
		wildcard    bool
		want        string
	}{
		{"a cluster name passes", "cluster-1", false, ""},
		{"a service name passes", "gloo-mesh-mgmt-server.gloo-mesh", false, ""},
		{"a wildcard passes where allowed", "*.gloo-mesh", true, ""},
		{"a wildcard fails where not allowed", "*.gloo-mesh", false, `label "*"`},
		{"a bare wildcard fails", "*", true, `label "*"`},
		{"a wildcard in a later label fails", "a.*.b", true, `label "*"`},
		{"an underscore is named with the fix", "cluster_1", false, `DNS name "cluster_1" contains an underscore, which is not allowed in a DNS-1123 name: use "cluster-1"`},
		{"uppercase is named with the fix", "Cluster-1", false, `uppercase letters: use "cluster-1"`},
		{"an empty name fails", "", false, "DNS name is empty"},
		{"an empty label fails", "a..b", false, "empty label"},
		{"a leading hyphen fails", "-a", false, "starts or ends with a hyphen"},
		{"a trailing hyphen fails", "a-", false, "starts or ends with a hyphen"},
		{"a space fails", "a b", false, `character ' '`},
		{"a label of 64 bytes fails", strings.Repeat("a", 64), false, "more than the 63 allowed"},
		{"a name of 254 bytes fails", strings.Repeat("a.", 127), false, "more than the 253 allowed"},
	} {
		t.Run(tc.name, func(t *testing.T) { wantErr(t, CheckDNSName(tc.input, tc.wildcard), tc.want) })
	}
}

func TestCheckDNSLabel(t *testing.T) {
	wantErr(t, CheckDNSLabel("cluster-1"), "")
	wantErr(t, CheckDNSLabel("cluster_1"), `use "cluster-1"`)
	wantErr(t, CheckDNSLabel("cluster.one"), `character '.'`)
	wantErr(t, CheckDNSLabel(""), "empty label")
}

func TestCoversAuthority(t *testing.T) {
	for _, tc := range []struct {
		name  string
		sans  []string
		auth  string
		wants string
	}{
		{"the exact name covers", []string{"gloo-mesh-mgmt-server.gloo-mesh"}, "gloo-mesh-mgmt-server.gloo-mesh", ""},
		{"a wildcard covers one label", []string{"*.gloo-mesh"}, "gloo-mesh-mgmt-server.gloo-mesh", ""},
		{"case does not matter", []string{"*.Gloo-Mesh"}, "gloo-mesh-mgmt-server.gloo-mesh", ""},
		{"a wildcard does not cover two labels", []string{"*.gloo-mesh"}, "a.b.gloo-mesh", "do not cover the authority"},
		{"a wildcard does not cover the bare domain", []string{"*.gloo-mesh"}, "gloo-mesh", "do not cover"},
		{"another name does not cover", []string{"relay.example.com"}, "gloo-mesh-mgmt-server.gloo-mesh", `add "gloo-mesh-mgmt-server.gloo-mesh" to the certificate's DNS names`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantErr(t, CoversAuthority(&x509.Certificate{DNSNames: tc.sans}, tc.auth), tc.wants)
		})
	}
}

func TestClientIdentity(t *testing.T) {
	u, _ := url.Parse("spiffe://x/y")
	for _, tc := range []struct {
		name string
		cert x509.Certificate
		id   string
		want string
	}{
		{"one DNS name is the identity", x509.Certificate{DNSNames: []string{"cluster-1"}}, "cluster-1", ""},
		{"two DNS names prove nothing", x509.Certificate{DNSNames: []string{"a", "b"}}, "", "exactly one"},
		{"no DNS name proves nothing", x509.Certificate{}, "", "exactly one"},
		{"an IP SAN is refused", x509.Certificate{DNSNames: []string{"a"}, IPAddresses: []net.IP{net.IPv4(1, 2, 3, 4)}}, "", "1 IP, URI or email SANs"},
		{"a URI SAN is refused", x509.Certificate{DNSNames: []string{"a"}, URIs: []*url.URL{u}}, "", "IP, URI or email"},
		{"an underscore name is named", x509.Certificate{DNSNames: []string{"cluster_1"}}, "", `use "cluster-1"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, err := ClientIdentity(&tc.cert)
			wantErr(t, err, tc.want)
			if id != tc.id {
				t.Errorf("identity = %q, want %q", id, tc.id)
			}
		})
	}
}

func TestRenewalTime(t *testing.T) {
	year := 365 * 24 * time.Hour
	cert := &x509.Certificate{NotBefore: t0, NotAfter: t0.Add(year)}
	for _, tc := range []struct {
		name          string
		ratio, jitter float64
		want          time.Time
		err           string
	}{
		{"a ratio of 0.1 renews 36.5 days before expiry", 0.1, 0, t0.Add(year - 876*time.Hour), ""},
		{"full jitter doubles the grace", 0.1, 1, t0.Add(year - 2*876*time.Hour), ""},
		{"negative jitter is clamped to none", 0.1, -3, t0.Add(year - 876*time.Hour), ""},
		{"a large ratio with jitter never goes before NotBefore", 0.9, 1, t0, ""},
		{"a ratio of 0 is refused", 0, 0, time.Time{}, "must be between 0 and 1"},
		{"a ratio of 1 is refused", 1, 0, time.Time{}, "must be between 0 and 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			at, err := RenewalTime(cert, tc.ratio, tc.jitter)
			wantErr(t, err, tc.err)
			if !at.Equal(tc.want) {
				t.Errorf("RenewalTime = %s, want %s", at, tc.want)
			}
		})
	}
	if _, err := RenewalTime(&x509.Certificate{NotBefore: t0, NotAfter: t0}, 0.1, 0); err == nil {
		t.Error("RenewalTime of a zero-lifetime certificate returned no error")
	}
	in, err := InRotationWindow(cert, 0.1, t0.Add(year-800*time.Hour))
	if err != nil || !in {
		t.Errorf("InRotationWindow 800h before expiry = %v, %v; want true", in, err)
	}
	in, _ = InRotationWindow(cert, 0.1, t0.Add(year/2))
	if in {
		t.Error("InRotationWindow half way = true, want false")
	}
	if _, err := InRotationWindow(cert, 2, t0); err == nil {
		t.Error("InRotationWindow with ratio 2 returned no error")
	}
}

func TestCheckValidity(t *testing.T) {
	cert := &x509.Certificate{NotBefore: t0, NotAfter: t0.Add(time.Hour)}
	wantErr(t, CheckValidity(cert, t0.Add(time.Minute)), "")
	wantErr(t, CheckValidity(cert, t0.Add(2*time.Hour)), "certificate expired at 2026-06-01T13:00:00Z, 1h0m0s ago")
	wantErr(t, CheckValidity(cert, t0.Add(-time.Minute)), "not valid until 2026-06-01T12:00:00Z, 1m0s from now: check the clocks")
}

func TestCheckRoleDNSNameAllowsAWildcardOnlyWhereTheRoleMayCarryOne(t *testing.T) {
	for _, tc := range []struct {
		role Role
		ok   bool
	}{{RoleServer, true}, {RoleSigningCA, true}, {RoleRoot, true}, {RoleClient, false}} {
		if err := CheckRoleDNSName(tc.role, "*.gloo-mesh"); (err == nil) != tc.ok {
			t.Errorf("%s: *.gloo-mesh gives %v, want accepted = %v", tc.role, err, tc.ok)
		}
		if err := CheckRoleDNSName(tc.role, "cluster_1"); err == nil {
			t.Errorf("%s: an underscore is accepted", tc.role)
		}
	}
}
