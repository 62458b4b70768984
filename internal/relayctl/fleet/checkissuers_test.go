package fleet

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshrelay/meshrelay/internal/relayctl/certgen"
	"github.com/meshrelay/meshrelay/internal/testenv"
	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/pkg/pki"
	"github.com/meshrelay/meshrelay/pkg/relaysecret"
)

// TestCheckJudgesClientIssuersAndWarnsOfWorkloadCAKeys applies relayctl
// gen's two-intermediates secrets to a management and a workload cluster
// and runs check: it names the CA relay-server admits client certificates
// from, accepts the signing CA's client certificate, reports one minted with
// the workload cluster's mesh CA key as a problem, and warns that cacerts
// holds a CA key under the relay root, saying what it allows.
func TestCheckJudgesClientIssuersAndWarnsOfWorkloadCAKeys(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Names: []string{"mgmt", "cluster-1"}})
	mgmt, remote := env.Cluster("mgmt").Client, env.Cluster("cluster-1").Client
	ctx := t.Context()
	srv, ag, wh := config.DefaultServer(), config.DefaultAgent(), config.DefaultWebhook()
	sets, err := certgen.Generate(certgen.Options{Architecture: certgen.TwoIntermediates, Clusters: []string{"cluster-1"}})
	if err != nil {
		t.Fatal(err)
	}
	var meshCA *pki.Certified
	for _, c := range []struct {
		name string
		set  certgen.ClusterSecrets
	}{{"mgmt", sets[0]}, {"cluster-1", sets[1]}} {
		for _, ns := range []string{config.DefaultNamespace, config.DefaultIstioNamespace} {
			_ = env.Cluster(c.name).Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
		}
		for _, s := range c.set.Secrets {
			s := s
			if err := env.Cluster(c.name).Client.Create(ctx, &s); err != nil {
				t.Fatal(err)
			}
			if s.Name == config.DefaultIstioCASecret {
				m, errs := relaysecret.Decode(relaysecret.IstioCA, s.Data, "")
				if len(errs) > 0 {
					t.Fatal(errs)
				}
				meshCA = m.Certified()
			}
		}
	}
	check := func(t *testing.T, srv config.Server) *Report {
		t.Helper()
		r, err := Check(ctx, CheckOptions{Server: &srv, Agent: &ag, Webhook: &wh, Mgmt: mgmt, Now: time.Now(),
			Remotes: []Remote{{Context: "cluster-1", Name: "cluster-1", Client: remote}}})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	want := func(t *testing.T, r *Report, cluster, check string, st Status, parts ...string) {
		t.Helper()
		var seen []Finding
	findings:
		for _, f := range r.Findings {
			if f.Cluster != cluster || f.Check != check {
				continue
			}
			seen = append(seen, f)
			for _, p := range parts {
				if f.Status != st || !strings.Contains(f.Detail, p) {
					continue findings
				}
			}
			return
		}
		t.Errorf("no finding %s: %s with status %s containing %q; found %+v", cluster, check, st, parts, seen)
	}

	t.Run("the signing CA is admitted, and cacerts holds a CA key under the relay root", func(t *testing.T) {
		r := check(t, srv)
		want(t, r, "management", "client issuers", OK, relaysecret.SigningCommonName)
		want(t, r, "cluster-1", "client issuer", OK, "which relay-server admits")
		want(t, r, "cluster-1", "secret istio-system/cacerts", Warning, "meshrelay-mesh-ca", "a CA under the relay root", "pins the root only")
	})

	t.Run("a client certificate the mesh CA key mints is a problem naming its issuer", func(t *testing.T) {
		forged, err := meshCA.IssueClient(pki.Options{DNSNames: []string{"cluster-1"}, TTL: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		var s corev1.Secret
		if err := remote.Get(ctx, types.NamespacedName{Namespace: ag.Namespace, Name: ag.ClientTLSSecret.Name}, &s); err != nil {
			t.Fatal(err)
		}
		s.Data[relaysecret.KeyTLSCert] = forged.CertPEM()
		s.Data[relaysecret.KeyTLSKey], _ = forged.KeyPEM()
		if err := remote.Update(ctx, &s); err != nil {
			t.Fatal(err)
		}
		want(t, check(t, srv), "cluster-1", "client issuer", Problem, "meshrelay-mesh-ca", "does not admit client certificates from", "clientIssuerSecret")
	})

	t.Run("without its CA and without clientIssuerSecret, check says what it cannot judge", func(t *testing.T) {
		off := srv
		off.DisableCa = true
		want(t, check(t, off), "management", "client issuers", Warning, "--client-issuer-secret")
		off.ClientIssuerSecret = "relay-client-issuers"
		want(t, check(t, off), "management", "client issuers", Problem, "relay-server admits no client certificate")
	})

	t.Run("after the intermediate is rotated, a client certificate of the one in previous.crt is admitted", func(t *testing.T) {
		get := func(c interface {
			Get(context.Context, types.NamespacedName, client.Object, ...client.GetOption) error
		}, ns, name string) *corev1.Secret {
			var s corev1.Secret
			if err := c.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, &s); err != nil {
				t.Fatal(err)
			}
			return &s
		}
		signing := get(mgmt, srv.Namespace, srv.SigningTLSSecret.Name)
		old, errs := relaysecret.Decode(relaysecret.Signing, signing.Data, "")
		if len(errs) > 0 {
			t.Fatal(errs)
		}
		root, errs := relaysecret.Decode(relaysecret.Root, get(mgmt, srv.Namespace, srv.RootTLSSecret.Name).Data, "")
		if len(errs) > 0 || root.Key == nil {
			t.Fatalf("root secret: %v (key %v)", errs, root.Key != nil)
		}
		newer, err := (&pki.Certified{Cert: root.Cert, Key: root.Key}).NewIntermediateCA(pki.Options{CommonName: "meshrelay-signing-ca-2", TTL: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		cert, err := old.Certified().IssueClient(pki.Options{DNSNames: []string{"cluster-1"}, TTL: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		cs := get(remote, ag.Namespace, ag.ClientTLSSecret.Name)
		cs.Data[relaysecret.KeyTLSCert] = cert.CertPEM()
		cs.Data[relaysecret.KeyTLSKey], _ = cert.KeyPEM()
		if err := remote.Update(ctx, cs); err != nil {
			t.Fatal(err)
		}
		keyPEM, _ := newer.KeyPEM()
		signing.Data = map[string][]byte{relaysecret.KeyTLSCert: newer.CertPEM(), relaysecret.KeyTLSKey: keyPEM, relaysecret.KeyCACert: newer.CAPEM()}
		if err := mgmt.Update(ctx, signing); err != nil {
			t.Fatal(err)
		}
		want(t, check(t, srv), "cluster-1", "client issuer", Problem, "does not admit client certificates from")
		signing.Data[relaysecret.KeyPreviousCACert] = pki.EncodeCertificates(old.Cert)
		if err := mgmt.Update(ctx, signing); err != nil {
			t.Fatal(err)
		}
		r := check(t, srv)
		want(t, r, "management", "client issuers", OK, "meshrelay-signing-ca-2", old.Cert.Subject.CommonName)
		want(t, r, "cluster-1", "client issuer", OK, "which relay-server admits")
	})
}
