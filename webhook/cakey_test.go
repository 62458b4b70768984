package webhook_test

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/meshrelay/meshrelay/internal/relayctl/certgen"
	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/pkg/relaysecret"
)

// TestAWorkloadClustersCAKeyUnderTheRelayRootIsAWarning applies each
// architecture relayctl gen makes to workload cluster cluster-1 as a user
// would (relay-root-tls-secret, relay-client-tls-secret, then Istio's
// cacerts) and reads kubectl's warnings: cacerts holding the relay signing
// CA's key (single) or another CA under the relay root (two-intermediates)
// is admitted with a warning that says what the key allows; a mesh CA with
// a root of its own (separate-roots) gets none; and so does the relay root
// with its key in relay-root-tls-secret (an agent that issues its own
// certificate).
func TestAWorkloadClustersCAKeyUnderTheRelayRootIsAWarning(t *testing.T) {
	e := startWebhook(t, false)
	secretsOf := func(arch certgen.Architecture) (root, client, cacerts, mgmtRoot corev1.Secret) {
		sets, err := certgen.Generate(certgen.Options{Architecture: arch, Clusters: []string{cluster}})
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range sets[1].Secrets {
			switch s.Name {
			case config.DefaultRootTLSSecret:
				root = s
			case config.DefaultClientTLSSecret:
				client = s
			case config.DefaultIstioCASecret:
				cacerts = s
			}
		}
		for _, s := range sets[0].Secrets {
			if s.Name == config.DefaultRootTLSSecret {
				mgmtRoot = s
			}
		}
		return root, client, cacerts, mgmtRoot
	}
	clean := func() {
		for _, key := range [][2]string{{ns, config.DefaultRootTLSSecret}, {ns, config.DefaultClientTLSSecret}, {config.DefaultIstioNamespace, config.DefaultIstioCASecret}} {
			s := &corev1.Secret{}
			s.Namespace, s.Name = key[0], key[1]
			if err := e.cluster.Client.Delete(t.Context(), s); err != nil && !apierrors.IsNotFound(err) {
				t.Fatal(err)
			}
		}
	}
	for _, c := range []struct {
		arch certgen.Architecture
		want string
	}{
		{certgen.Single, "issuer pinning cannot refuse them"},
		{certgen.TwoIntermediates, "pins the root only"},
		{certgen.SeparateRoots, ""},
	} {
		t.Run(string(c.arch), func(t *testing.T) {
			clean()
			root, client, cacerts, _ := secretsOf(c.arch)
			for _, s := range []corev1.Secret{root, client} {
				if stderr := e.mustApply(t, toYAML(t, s)); strings.Contains(stderr, "Warning") {
					t.Errorf("%s: unexpected warning: %s", s.Name, stderr)
				}
			}
			stderr := e.mustApply(t, toYAML(t, cacerts))
			switch {
			case c.want == "" && strings.Contains(stderr, "Warning"):
				t.Errorf("cacerts: unexpected warning: %s", stderr)
			case c.want != "" && (!strings.Contains(stderr, c.want) || !strings.Contains(stderr, "workload cluster "+cluster)):
				t.Errorf("cacerts: kubectl said %q, want a warning containing %q", stderr, c.want)
			}
		})
	}

	t.Run("the relay root with its key in relay-root-tls-secret", func(t *testing.T) {
		clean()
		_, _, _, mgmtRoot := secretsOf(certgen.TwoIntermediates)
		if len(mgmtRoot.Data[relaysecret.KeyTLSKey]) == 0 {
			t.Fatal("relayctl gen's management relay-root-tls-secret has no tls.key")
		}
		stderr := e.mustApply(t, toYAML(t, mgmtRoot))
		if !strings.Contains(stderr, "private key of the relay root") || !strings.Contains(stderr, "every agent accepts") {
			t.Errorf("kubectl said %q, want a warning that the root key lets this cluster serve as relay-server", stderr)
		}
	})
}
