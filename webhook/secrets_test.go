package webhook_test

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	meshv1alpha1 "github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/pkg/pki"
	"github.com/meshrelay/meshrelay/pkg/relaysecret"
)

const ns = config.DefaultNamespace

func TestRelaySecretsThroughKubectl(t *testing.T) {
	e := startWebhook(t, false)
	f := newPKI(t)
	other := newPKI(t) // a second, unrelated PKI
	ca := f.root.CAPEM()
	dryRun := []string{"--dry-run=server"}

	t.Run("good secrets of every role are admitted", func(t *testing.T) {
		for _, s := range []*corev1.Secret{
			f.rootSecret(t),
			tlsSecret(t, ns, config.DefaultSigningTLSSecret, f.signing, ca),
			tlsSecret(t, ns, config.DefaultServerTLSSecret, f.server(t, "*.gloo-mesh", config.DefaultAuthority), ca),
			tlsSecret(t, ns, config.DefaultClientTLSSecret, f.client(t, cluster, pki.Options{}), ca),
			tokenSecret(strings.Repeat("t", 43)),
		} {
			stderr := e.mustApply(t, toYAML(t, s))
			// The root's key on a workload cluster is admitted with a
			// warning saying what it allows (cakey_test.go).
			if s.Name == config.DefaultRootTLSSecret && len(s.Data[relaysecret.KeyTLSKey]) > 0 {
				stderr = strings.Replace(stderr, "Warning: "+ns+"/"+s.Name+" on workload cluster "+cluster+" holds the private key of the relay root", "", 1)
			}
			if strings.Contains(stderr, "Warning") {
				t.Errorf("%s: unexpected warning: %s", s.Name, stderr)
			}
		}
	})

	bad := []struct {
		name   string
		secret *corev1.Secret
		want   []string
	}{
		{"a client certificate for another cluster is denied with the name to use",
			tlsSecret(t, ns, config.DefaultClientTLSSecret, f.client(t, "cluster-2", pki.Options{}), ca),
			[]string{`data[tls.crt]: client certificate is for cluster "cluster-2", not this cluster "cluster-1"`, `issue it with DNS name "cluster-1"`}},
		{"a DNS name with an underscore is denied as such",
			tlsSecret(t, ns, config.DefaultClientTLSSecret, f.rawLeaf(t, "cluster_1"), ca),
			[]string{`contains an underscore`, `use "cluster-1"`}},
		{"a key that belongs to another certificate is denied",
			withKey(t, tlsSecret(t, ns, config.DefaultClientTLSSecret, f.client(t, cluster, pki.Options{}), ca), f.client(t, cluster, pki.Options{})),
			[]string{"data[tls.key]: private key does not match the certificate"}},
		{"a chain that does not verify to ca.crt is denied",
			tlsSecret(t, ns, config.DefaultClientTLSSecret, other.client(t, cluster, pki.Options{}), ca),
			[]string{"data[tls.crt]: client certificate chain does not verify to the root CA"}},
		{"a chain to its own ca.crt but not to relay-root-tls-secret is denied",
			tlsSecret(t, ns, config.DefaultClientTLSSecret, other.client(t, cluster, pki.Options{}), other.root.CAPEM()),
			[]string{"does not chain to relay-root-tls-secret's ca.crt"}},
		{"a server certificate in the client secret is denied for its usage",
			tlsSecret(t, ns, config.DefaultClientTLSSecret, f.server(t, cluster), ca),
			[]string{"data[tls.crt]: client certificate chain does not verify"}},
		{"an expired client certificate is denied",
			tlsSecret(t, ns, config.DefaultClientTLSSecret, f.client(t, cluster, pki.Options{Now: f.now.Add(-3 * time.Hour), TTL: time.Hour}), ca),
			[]string{"expired at"}},
		{"a client certificate not valid yet is denied",
			tlsSecret(t, ns, config.DefaultClientTLSSecret, f.client(t, cluster, pki.Options{Now: f.now.Add(2 * time.Hour), Backdate: -1}), ca),
			[]string{"not valid until"}},
		{"tls.crt that is not PEM is denied",
			withData(tlsSecret(t, ns, config.DefaultClientTLSSecret, f.client(t, cluster, pki.Options{}), ca), relaysecret.KeyTLSCert, "not a certificate"),
			[]string{"data[tls.crt]: no PEM data found"}},
		{"a client secret without ca.crt, from another root, is denied",
			tlsSecret(t, ns, config.DefaultClientTLSSecret, other.client(t, cluster, pki.Options{}), nil),
			[]string{"data[tls.crt]: the secret has no ca.crt, and the chain does not verify to relay-root-tls-secret's ca.crt"}},
		{"a server certificate that does not cover the authority is denied",
			tlsSecret(t, ns, config.DefaultServerTLSSecret, f.server(t, "relay.example.com"), ca),
			[]string{`do not cover the authority "gloo-mesh-mgmt-server.gloo-mesh"`}},
		{"a signing secret that is not a CA is denied",
			tlsSecret(t, ns, config.DefaultSigningTLSSecret, f.server(t, "signing.gloo-mesh"), ca),
			[]string{"is not a CA"}},
		{"a root that is not self-signed is denied",
			tlsSecret(t, ns, config.DefaultRootTLSSecret, f.signing, f.signing.CertPEM()),
			[]string{"data[ca.crt]: certificate 1", "is not self-signed"}},
		{"an empty identity token is denied",
			tokenSecret(""),
			[]string{"data[token]: missing or empty"}},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			e.wantDenied(t, toYAML(t, tc.secret), dryRun, tc.want...)
		})
	}

	t.Run("a denial under --dry-run=server stores nothing, and a real apply is denied the same", func(t *testing.T) {
		s := tlsSecret(t, ns, "relay-client-tls-secret", f.client(t, "cluster-2", pki.Options{}), ca)
		if err := e.cluster.Client.Delete(e.ctx, s.DeepCopy()); err != nil {
			t.Fatal(err)
		}
		e.wantDenied(t, toYAML(t, s), dryRun, "cluster-2")
		if e.secretExists(t, ns, s.Name) {
			t.Fatal("the dry run stored the secret")
		}
		e.wantDenied(t, toYAML(t, s), nil, "cluster-2")
		if e.secretExists(t, ns, s.Name) {
			t.Fatal("a denied apply stored the secret")
		}
		e.mustApply(t, toYAML(t, tlsSecret(t, ns, config.DefaultClientTLSSecret, f.client(t, cluster, pki.Options{}), ca)))
	})

	t.Run("a certificate inside its rotation window is admitted with a warning", func(t *testing.T) {
		near := f.client(t, cluster, pki.Options{Now: f.now.Add(-95 * time.Hour), TTL: 100 * time.Hour})
		stderr := e.mustApply(t, toYAML(t, tlsSecret(t, ns, config.DefaultClientTLSSecret, near, ca)))
		if !strings.Contains(stderr, "Warning: data[tls.crt]") || !strings.Contains(stderr, "inside its rotation window") {
			t.Errorf("kubectl printed %q, want the rotation window warning", stderr)
		}
	})

	t.Run("a short identity token is admitted with a warning", func(t *testing.T) {
		stderr := e.mustApply(t, toYAML(t, tokenSecret("short")))
		if !strings.Contains(stderr, "is 5 bytes") || !strings.Contains(stderr, "easier to guess") {
			t.Errorf("kubectl printed %q, want the short token warning", stderr)
		}
	})

	t.Run("replacing the root in a way that orphans the stored certificates is denied", func(t *testing.T) {
		replaced := tlsSecret(t, ns, config.DefaultRootTLSSecret, other.root, other.root.CAPEM())
		e.wantDenied(t, toYAML(t, replaced), nil, "this update leaves", "relay-tls-signing-secret", "relay-server-tls-secret",
			"keep the old root in ca.crt beside the new one", meshv1alpha1.AllowChainBreakAnnotation+"=true")
	})

	t.Run("adding a new root beside the old one is admitted", func(t *testing.T) {
		both := f.rootSecret(t)
		both.Data[relaysecret.KeyCACert] = append(append([]byte{}, ca...), other.root.CAPEM()...)
		e.mustApply(t, toYAML(t, both))
	})

	t.Run("a signing secret from another root is denied before it can orphan anything", func(t *testing.T) {
		e.mustApply(t, toYAML(t, f.rootSecret(t)))
		e.wantDenied(t, toYAML(t, tlsSecret(t, ns, config.DefaultSigningTLSSecret, other.signing, other.root.CAPEM())), nil,
			"does not chain to relay-root-tls-secret's ca.crt")
	})

	t.Run("the override annotation admits a root replacement with a warning", func(t *testing.T) {
		replaced := tlsSecret(t, ns, config.DefaultRootTLSSecret, other.root, other.root.CAPEM())
		replaced.Annotations = map[string]string{meshv1alpha1.AllowChainBreakAnnotation: "true"}
		stderr := e.mustApply(t, toYAML(t, replaced))
		if !strings.Contains(stderr, "no longer verify") {
			t.Errorf("kubectl printed %q, want a warning naming what no longer verifies", stderr)
		}
	})
}

func withKey(t *testing.T, s *corev1.Secret, from *pki.Certified) *corev1.Secret {
	key, err := from.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	s.Data[relaysecret.KeyTLSKey] = key
	return s
}

func withData(s *corev1.Secret, key, value string) *corev1.Secret {
	s.Data[key] = []byte(value)
	return s
}
