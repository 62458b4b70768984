package certgen

import (
	"crypto/x509"
	"maps"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/pkg/pki"
	"github.com/meshrelay/meshrelay/pkg/relaysecret"
)

func TestEveryClusterGetsItsSecretsWithTheKeysTheyMustHold(t *testing.T) {
	type want struct {
		namespace, name string
		typ             corev1.SecretType
		keys            []string
	}
	tlsKeys := []string{relaysecret.KeyCACert, relaysecret.KeyTLSCert, relaysecret.KeyTLSKey}
	mgmt := []want{
		{"gloo-mesh", config.DefaultRootTLSSecret, corev1.SecretTypeTLS, tlsKeys},
		{"gloo-mesh", config.DefaultSigningTLSSecret, corev1.SecretTypeTLS, tlsKeys},
		{"gloo-mesh", config.DefaultServerTLSSecret, corev1.SecretTypeTLS, tlsKeys},
	}
	workload := []want{
		{"gloo-mesh", config.DefaultRootTLSSecret, corev1.SecretTypeOpaque, []string{relaysecret.KeyCACert}},
		{"gloo-mesh", config.DefaultClientTLSSecret, corev1.SecretTypeTLS, tlsKeys},
		{"istio-system", config.DefaultIstioCASecret, corev1.SecretTypeOpaque, []string{pki.IstioCACertKey, pki.IstioCAKeyKey, pki.IstioCertChainKey, pki.IstioRootCertKey}},
	}
	for _, arch := range Architectures {
		t.Run(string(arch), func(t *testing.T) {
			sets := generate(t, arch, "cluster-1", "cluster-2")
			if got := []string{sets[0].Cluster, sets[1].Cluster, sets[2].Cluster}; !slices.Equal(got, []string{Management, "cluster-1", "cluster-2"}) || len(sets) != 3 {
				t.Fatalf("clusters = %v, want management then the workload clusters in order", got)
			}
			for _, set := range sets {
				wants := workload
				if set.Cluster == Management {
					wants = mgmt
				}
				if len(set.Secrets) != len(wants) {
					t.Errorf("cluster %s has %d secrets, want %d", set.Cluster, len(set.Secrets), len(wants))
					continue
				}
				for i, w := range wants {
					s := set.Secrets[i]
					got := want{s.Namespace, s.Name, s.Type, slices.Sorted(maps.Keys(s.Data))}
					if got.namespace != w.namespace || got.name != w.name || got.typ != w.typ || !slices.Equal(got.keys, w.keys) {
						t.Errorf("cluster %s secret %d = %+v, want %+v", set.Cluster, i, got, w)
					}
					if s.APIVersion != "v1" || s.Kind != "Secret" {
						t.Errorf("cluster %s secret %s has apiVersion %q kind %q, want v1 Secret", set.Cluster, s.Name, s.APIVersion, s.Kind)
					}
				}
			}
		})
	}
}

func TestRelayChainsVerifyBetweenTheServerAndEveryAgent(t *testing.T) {
	for _, arch := range Architectures {
		t.Run(string(arch), func(t *testing.T) {
			sets := generate(t, arch, "cluster-1", "cluster-2")
			mgmtRoot := secretOf(t, sets, Management, config.DefaultRootTLSSecret)
			roots := certsOf(t, mgmtRoot, relaysecret.KeyCACert)
			if _, err := pki.VerifyChain(roots[0], nil, nil, pki.RoleRoot, t0); err != nil {
				t.Fatalf("management relay-root-tls-secret ca.crt is not a root: %v", err)
			}
			if m, errs := relaysecret.Decode(relaysecret.Root, mgmtRoot.Data, ""); len(errs) > 0 || m.Key == nil {
				t.Errorf("management root's key does not decode or match: %v", errs)
			}

			signing := secretOf(t, sets, Management, config.DefaultSigningTLSSecret)
			kp, errs := relaysecret.Decode(relaysecret.Signing, signing.Data, "")
			if len(errs) > 0 {
				t.Fatalf("signing secret: %v", errs)
			}
			inter := kp.Cert
			if !inter.IsCA || !inter.MaxPathLenZero || len(kp.Chain) != 0 {
				t.Errorf("signing secret tls.crt: IsCA=%v MaxPathLenZero=%v with %d more certificates, want one CA of path length 0", inter.IsCA, inter.MaxPathLenZero, len(kp.Chain))
			}
			if _, err := pki.VerifyChain(inter, nil, roots, pki.RoleSigningCA, t0); err != nil {
				t.Errorf("signing CA does not verify to the management root: %v", err)
			}

			server := secretOf(t, sets, Management, config.DefaultServerTLSSecret)
			sv, err := relaysecret.Load(relaysecret.Server, map[string][]byte{relaysecret.KeyTLSCert: server.Data[relaysecret.KeyTLSCert], relaysecret.KeyTLSKey: server.Data[relaysecret.KeyTLSKey], relaysecret.KeyCACert: server.Data[relaysecret.KeyCACert]}, "", relaysecret.Context{Authority: authority, Now: t0})
			if err != nil {
				t.Fatalf("server secret does not validate for the authority: %v", err)
			}
			if want := []string{"*.gloo-mesh", authority}; !slices.Equal(sv.Cert.DNSNames, want) {
				t.Errorf("server DNS names = %v, want %v", sv.Cert.DNSNames, want)
			}
			if len(sv.Chain) != 1 || !sv.Chain[0].Equal(inter) {
				t.Errorf("server tls.crt does not carry the signing intermediate after the leaf")
			}

			for _, cluster := range []string{"cluster-1", "cluster-2"} {
				// The agent pins its relay-root-tls-secret's ca.crt to verify the server.
				wroot := secretOf(t, sets, cluster, config.DefaultRootTLSSecret)
				agentRoots := certsOf(t, wroot, relaysecret.KeyCACert)
				if len(agentRoots) != 1 || !agentRoots[0].Equal(roots[0]) {
					t.Errorf("%s relay-root-tls-secret ca.crt is not the management root", cluster)
				}
				if _, err := pki.VerifyChain(sv.Cert, sv.Chain, agentRoots, pki.RoleServer, t0); err != nil {
					t.Errorf("%s cannot verify the server: %v", cluster, err)
				}

				client := secretOf(t, sets, cluster, config.DefaultClientTLSSecret)
				cv, err := relaysecret.Load(relaysecret.Client, map[string][]byte{relaysecret.KeyTLSCert: client.Data[relaysecret.KeyTLSCert], relaysecret.KeyTLSKey: client.Data[relaysecret.KeyTLSKey], relaysecret.KeyCACert: client.Data[relaysecret.KeyCACert]}, "", relaysecret.Context{Cluster: cluster, Now: t0})
				if err != nil {
					t.Fatalf("%s client secret does not validate: %v", cluster, err)
				}
				if !slices.Equal(cv.Cert.DNSNames, []string{cluster}) {
					t.Errorf("%s client DNS names = %v, want exactly the cluster name", cluster, cv.Cert.DNSNames)
				}
				if len(cv.Chain) != 1 || !cv.Chain[0].Equal(inter) {
					t.Errorf("%s client tls.crt does not carry the signing intermediate after the leaf", cluster)
				}
				// The server verifies clients with its root secret's and its own ca.crt.
				for _, serverRoots := range [][]*x509.Certificate{roots, sv.Roots} {
					if _, err := pki.VerifyChain(cv.Cert, cv.Chain, serverRoots, pki.RoleClient, t0); err != nil {
						t.Errorf("the server cannot verify %s's client certificate: %v", cluster, err)
					}
				}
				other := "cluster-2"
				if cluster == other {
					other = "cluster-1"
				}
				if _, err := relaysecret.Load(relaysecret.Client, map[string][]byte{relaysecret.KeyTLSCert: client.Data[relaysecret.KeyTLSCert], relaysecret.KeyTLSKey: client.Data[relaysecret.KeyTLSKey], relaysecret.KeyCACert: client.Data[relaysecret.KeyCACert]}, "", relaysecret.Context{Cluster: other, Now: t0}); err == nil {
					t.Errorf("%s client certificate validates as %s", cluster, other)
				}
			}
		})
	}
}

func TestIstiosCAFollowsTheArchitecture(t *testing.T) {
	for _, tc := range []struct {
		name string
		arch Architecture
		// sharesSigning: Istio's CA is the relay's signing intermediate.
		sharesSigning bool
		// sharesRoot: Istio's CA chains to the relay root.
		sharesRoot bool
	}{
		{"single: Istio's CA is the relay's one intermediate", Single, true, true},
		{"two-intermediates: Istio's CA is a second intermediate under the relay root", TwoIntermediates, false, true},
		{"separate-roots: Istio's CA chains to a root the relay does not trust", SeparateRoots, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sets := generate(t, tc.arch, "cluster-1", "cluster-2")
			relayRoots := certsOf(t, secretOf(t, sets, Management, config.DefaultRootTLSSecret), relaysecret.KeyCACert)
			signing := certsOf(t, secretOf(t, sets, Management, config.DefaultSigningTLSSecret), relaysecret.KeyTLSCert)[0]
			client := secretOf(t, sets, "cluster-1", config.DefaultClientTLSSecret)
			clientChain := certsOf(t, client, relaysecret.KeyTLSCert)

			var first *x509.Certificate
			for _, cluster := range []string{"cluster-1", "cluster-2"} {
				s := secretOf(t, sets, cluster, config.DefaultIstioCASecret)
				kp, errs := relaysecret.Decode(relaysecret.IstioCA, s.Data, "")
				if len(errs) > 0 {
					t.Fatalf("%s cacerts: %v", cluster, errs)
				}
				chain := certsOf(t, s, pki.IstioCertChainKey)
				if !chain[0].Equal(kp.Cert) || !chain[len(chain)-1].Equal(kp.Roots[0]) {
					t.Errorf("%s cert-chain.pem does not run from ca-cert.pem to root-cert.pem", cluster)
				}
				if !kp.Cert.IsCA {
					t.Errorf("%s ca-cert.pem is not a CA", cluster)
				}
				if _, err := pki.VerifyChain(kp.Cert, chain[1:], kp.Roots, pki.RoleSigningCA, t0); err != nil {
					t.Errorf("%s Istio CA does not verify to root-cert.pem: %v", cluster, err)
				}
				if first == nil {
					first = kp.Cert
				} else if !first.Equal(kp.Cert) {
					t.Errorf("workload clusters hold different Istio CAs, want the one intermediate of the architecture")
				}
				if got := kp.Cert.Equal(signing); got != tc.sharesSigning {
					t.Errorf("Istio CA is the relay signing CA: %v, want %v", got, tc.sharesSigning)
				}
				if got := kp.Roots[0].Equal(relayRoots[0]); got != tc.sharesRoot {
					t.Errorf("Istio root is the relay root: %v, want %v", got, tc.sharesRoot)
				}
				_, meshToRelay := pki.VerifyChain(kp.Cert, nil, relayRoots, pki.RoleSigningCA, t0)
				_, relayToMesh := pki.VerifyChain(clientChain[0], clientChain[1:], kp.Roots, pki.RoleClient, t0)
				if tc.sharesRoot && (meshToRelay != nil || relayToMesh != nil) {
					t.Errorf("with a shared root, mesh and relay chains must verify to it: %v, %v", meshToRelay, relayToMesh)
				}
				if !tc.sharesRoot && (meshToRelay == nil || relayToMesh == nil) {
					t.Errorf("with separate roots, the Istio CA verifies to the relay root or a relay client to the Istio root")
				}
			}
		})
	}
}

func TestEachRunMakesNewRoots(t *testing.T) {
	a := certsOf(t, secretOf(t, generate(t, Single, "cluster-1"), Management, config.DefaultRootTLSSecret), relaysecret.KeyCACert)
	b := certsOf(t, secretOf(t, generate(t, Single, "cluster-1"), Management, config.DefaultRootTLSSecret), relaysecret.KeyCACert)
	if a[0].Equal(b[0]) {
		t.Error("two runs made the same root")
	}
}

func TestNamespaceAndAuthorityShapeTheServerCertificate(t *testing.T) {
	sets, err := Generate(Options{Architecture: TwoIntermediates, Clusters: []string{"east"}, Namespace: "relay", Authority: "relay.example.com", Now: t0})
	if err != nil {
		t.Fatal(err)
	}
	server := secretOf(t, sets, Management, config.DefaultServerTLSSecret)
	if server.Namespace != "relay" {
		t.Errorf("server secret namespace = %q, want relay", server.Namespace)
	}
	if got := certsOf(t, server, relaysecret.KeyTLSCert)[0].DNSNames; !slices.Equal(got, []string{"*.relay", "relay.example.com"}) {
		t.Errorf("server DNS names = %v, want *.relay and the authority", got)
	}
	if ns := secretOf(t, sets, "east", config.DefaultClientTLSSecret).Namespace; ns != "relay" {
		t.Errorf("client secret namespace = %q, want relay", ns)
	}
}

func TestGeneratedCertificatesHaveTheLifetimesAndNamesRelayServerGives(t *testing.T) {
	sets := generate(t, Single, "cluster-1")
	for _, tc := range []struct {
		cluster, secret string
		cn              string
		org             []string
		lifetime        time.Duration
	}{
		{Management, config.DefaultRootTLSSecret, relaysecret.RootCommonName, []string{relaysecret.Organization}, relaysecret.RootLifetime},
		{Management, config.DefaultSigningTLSSecret, relaysecret.SigningCommonName, []string{relaysecret.Organization}, relaysecret.SigningLifetime},
		{Management, config.DefaultServerTLSSecret, authority, nil, relaysecret.ServerLifetime},
		{"cluster-1", config.DefaultClientTLSSecret, "cluster-1", nil, config.DefaultClientCertificateTTL},
	} {
		t.Run(tc.secret, func(t *testing.T) {
			cert := certsOf(t, secretOf(t, sets, tc.cluster, tc.secret), relaysecret.KeyTLSCert)[0]
			if got := cert.NotAfter.Sub(t0); got != tc.lifetime {
				t.Errorf("lifetime = %s, want %s", got, tc.lifetime)
			}
			if cert.Subject.CommonName != tc.cn || !slices.Equal(cert.Subject.Organization, tc.org) {
				t.Errorf("subject CN=%q O=%v, want CN=%q O=%v", cert.Subject.CommonName, cert.Subject.Organization, tc.cn, tc.org)
			}
		})
	}
}
