package certgen

import (
	"bytes"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/pkg/relaysecret"
)

// check decodes every secret of sets with pkg/pki and verifies it for what
// it is, and that every workload cluster trusts the management cluster's
// relay root: the chains Generate is about to return must work.
func check(sets []ClusterSecrets, opts Options) error {
	var mgmtRoot []byte
	for _, set := range sets {
		for i := range set.Secrets {
			s := &set.Secrets[i]
			if err := checkSecret(s, set.Cluster, opts.Authority, opts.Now); err != nil {
				return fmt.Errorf("cluster %s: secret %s/%s: %w", set.Cluster, s.Namespace, s.Name, err)
			}
			if s.Name != config.DefaultRootTLSSecret {
				continue
			}
			if mgmtRoot == nil {
				mgmtRoot = s.Data[relaysecret.KeyCACert]
			} else if !bytes.Equal(mgmtRoot, s.Data[relaysecret.KeyCACert]) {
				return fmt.Errorf("cluster %s: secret %s/%s: ca.crt is not the management cluster's relay root", set.Cluster, s.Namespace, s.Name)
			}
		}
	}
	return nil
}

// checkSecret judges one generated secret of cluster through the catalogue,
// as the webhook will when it is applied.
func checkSecret(s *corev1.Secret, cluster, authority string, now time.Time) error {
	kinds := map[string]relaysecret.Kind{
		config.DefaultRootTLSSecret:    relaysecret.Root,
		config.DefaultSigningTLSSecret: relaysecret.Signing,
		config.DefaultServerTLSSecret:  relaysecret.Server,
		config.DefaultClientTLSSecret:  relaysecret.Client,
		config.DefaultIstioCASecret:    relaysecret.IstioCA,
	}
	kind, ok := kinds[s.Name]
	if !ok {
		return errors.New("not a secret certgen makes")
	}
	_, r := relaysecret.Validate(kind, s.Data, "", relaysecret.Context{Authority: authority, Cluster: cluster, Now: now})
	return r.Err()
}
