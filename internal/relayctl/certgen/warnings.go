package certgen

import (
	"crypto/x509"
	"fmt"
	"strings"
	"time"

	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/pkg/relaysecret"
)

// Warnings says, for secrets sets that Generate made, what each CA key
// they put on workload clusters allows when it chains to the relay root,
// in relaysecret.CAKeyExposure's words (the ones relay-webhook and
// relayctl check use): in single, Istio's CA is the relay signing CA, which
// issuer pinning cannot refuse; in two-intermediates, it is another CA
// under the relay root, which pinning refuses except while an agent
// bootstraps; separate-roots has none. One line per key, naming the
// clusters that hold it; chains are verified at now.
func Warnings(sets []ClusterSecrets, now time.Time) ([]string, error) {
	var roots []*x509.Certificate
	var signing *x509.Certificate
	for _, set := range sets {
		if set.Cluster != Management {
			continue
		}
		for _, s := range set.Secrets {
			switch s.Name {
			case config.DefaultRootTLSSecret:
				m, errs := relaysecret.Decode(relaysecret.Root, s.Data, "")
				if len(errs) > 0 {
					return nil, fmt.Errorf("management secret %s: %s", s.Name, relaysecret.Message(errs))
				}
				roots = m.Roots
			case config.DefaultSigningTLSSecret:
				m, errs := relaysecret.Decode(relaysecret.Signing, s.Data, "")
				if len(errs) > 0 {
					return nil, fmt.Errorf("management secret %s: %s", s.Name, relaysecret.Message(errs))
				}
				signing = m.Cert
			}
		}
	}
	var order [][2]string
	holders := map[[2]string][]string{}
	for _, set := range sets {
		if set.Cluster == Management {
			continue
		}
		for _, s := range set.Secrets {
			kind := relaysecret.IstioCA
			if s.Name != config.DefaultIstioCASecret {
				if s.Name != config.DefaultRootTLSSecret {
					continue
				}
				kind = relaysecret.Root
			}
			m, errs := relaysecret.Decode(kind, s.Data, "")
			if len(errs) > 0 {
				return nil, fmt.Errorf("cluster %s: secret %s/%s: %s", set.Cluster, s.Namespace, s.Name, relaysecret.Message(errs))
			}
			what := relaysecret.CAKeyExposure(m, roots, signing, now)
			if what == "" {
				continue
			}
			line := [2]string{s.Namespace + "/" + s.Name, what}
			if _, ok := holders[line]; !ok {
				order = append(order, line)
			}
			holders[line] = append(holders[line], set.Cluster)
		}
	}
	var out []string
	for _, line := range order {
		where := "on workload cluster " + holders[line][0]
		if n := len(holders[line]); n > 1 {
			where = fmt.Sprintf("on every workload cluster (%s)", strings.Join(holders[line], ", "))
		}
		out = append(out, line[0]+" "+where+" "+line[1])
	}
	return out, nil
}
