package pki

import (
	"crypto/x509"
	"fmt"
	"strings"
)

// CheckDNSName returns an error unless name is a DNS-1123 subdomain: at most
// 253 bytes of dot-separated labels, each 1 to 63 lowercase letters, digits
// and hyphens, starting and ending with a letter or digit. With
// allowWildcard, a first label of "*" is accepted. An underscore is named
// explicitly, with the name to use instead: Go's TLS stack refuses such
// certificates, and a kubeconfig context name with an underscore used as
// the cluster name is a common mistake.
func CheckDNSName(name string, allowWildcard bool) error {
	if name == "" {
		return fmt.Errorf("DNS name is empty")
	}
	if strings.Contains(name, "_") {
		return fmt.Errorf("DNS name %q contains an underscore, which is not allowed in a DNS-1123 name: use %q", name, strings.ReplaceAll(name, "_", "-"))
	}
	if len(name) > 253 {
		return fmt.Errorf("DNS name %q is %d bytes, more than the 253 allowed", name, len(name))
	}
	labels := strings.Split(name, ".")
	for i, l := range labels {
		if i == 0 && l == "*" && allowWildcard && len(labels) > 1 {
			continue
		}
		if err := checkLabel(l); err != nil {
			return fmt.Errorf("DNS name %q: %w", name, err)
		}
	}
	return nil
}

// CheckRoleDNSName returns an error unless name may be a DNS name of a
// certificate of role: a DNS-1123 name, whose first label may be a wildcard
// on server and CA certificates, never on a client certificate, whose one
// name is its cluster's.
func CheckRoleDNSName(role Role, name string) error {
	return CheckDNSName(name, role != RoleClient)
}

// CheckDNSLabel returns an error unless name is a DNS-1123 label, as a
// cluster name must be.
func CheckDNSLabel(name string) error {
	if strings.Contains(name, "_") {
		return fmt.Errorf("name %q contains an underscore, which is not allowed in a DNS-1123 label: use %q", name, strings.ReplaceAll(name, "_", "-"))
	}
	if err := checkLabel(name); err != nil {
		return fmt.Errorf("name %q: %w", name, err)
	}
	return nil
}

func checkLabel(l string) error {
	switch {
	case l == "":
		return fmt.Errorf("has an empty label")
	case len(l) > 63:
		return fmt.Errorf("label %q is %d bytes, more than the 63 allowed", l, len(l))
	}
	for i := 0; i < len(l); i++ {
		c := l[i]
		alnum := c >= 'a' && c <= 'z' || c >= '0' && c <= '9'
		switch {
		case c >= 'A' && c <= 'Z':
			return fmt.Errorf("label %q has uppercase letters: use %q", l, strings.ToLower(l))
		case c == '-' && (i == 0 || i == len(l)-1):
			return fmt.Errorf("label %q starts or ends with a hyphen", l)
		case !alnum && c != '-':
			return fmt.Errorf("label %q has the character %q: use lowercase letters, digits and hyphens", l, c)
		}
	}
	return nil
}

// CoversAuthority returns an error unless cert's DNS SANs cover authority,
// the SNI name agents dial. A wildcard covers exactly one label:
// "*.gloo-mesh" covers "gloo-mesh-mgmt-server.gloo-mesh".
func CoversAuthority(cert *x509.Certificate, authority string) error {
	for _, san := range cert.DNSNames {
		if NameCovers(san, authority) {
			return nil
		}
	}
	return fmt.Errorf("server certificate DNS names %v do not cover the authority %q: add %q to the certificate's DNS names or set authority to one of them", cert.DNSNames, authority, authority)
}

// NameCovers reports whether the DNS name pattern, which may be a wildcard
// of one first label, matches host as a TLS client checks it.
func NameCovers(pattern, host string) bool {
	pattern, host = strings.ToLower(pattern), strings.ToLower(host)
	if pattern == host {
		return true
	}
	suffix, ok := strings.CutPrefix(pattern, "*.")
	if !ok {
		return false
	}
	first, rest, ok := strings.Cut(host, ".")
	return ok && first != "" && rest == suffix
}

// ClientIdentity returns the cluster name a client certificate proves: its
// one DNS SAN, which must be a DNS-1123 label. Certificates with any other
// SAN (a second DNS name, IPs, URIs, emails) prove nothing.
func ClientIdentity(cert *x509.Certificate) (string, error) {
	if n := len(cert.IPAddresses) + len(cert.URIs) + len(cert.EmailAddresses); n > 0 {
		return "", fmt.Errorf("client certificate has %d IP, URI or email SANs: it must carry only the cluster name as its DNS name", n)
	}
	if len(cert.DNSNames) != 1 {
		return "", fmt.Errorf("client certificate has DNS names %v: it must carry exactly one, the cluster name", cert.DNSNames)
	}
	name := cert.DNSNames[0]
	if err := CheckDNSLabel(name); err != nil {
		return "", fmt.Errorf("client certificate DNS name: %w", err)
	}
	return name, nil
}
