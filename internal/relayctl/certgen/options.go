package certgen

import (
	"fmt"
	"strings"
	"time"

	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/pkg/pki"
)

// Management is the name the management cluster's secrets are grouped
// under (and the folder WriteDir writes them to); no workload cluster may
// be called that.
const Management = "management"

// Options describe the secrets to generate.
type Options struct {
	Architecture Architecture
	// Clusters are the workload clusters' registered names; each gets a
	// client certificate whose one DNS name is its name.
	Clusters []string
	// Namespace holds the relay secrets; the server certificate covers
	// "*.<Namespace>". Empty means config.DefaultNamespace.
	Namespace string
	// Authority is the name agents dial (SNI); the server certificate covers
	// it. Empty means config.DefaultAuthority.
	Authority string
	// IstioNamespace holds Istio's CA secret, cacerts. Empty means
	// config.DefaultIstioNamespace.
	IstioNamespace string
	// Now is the time of issue; zero means time.Now().
	Now time.Time
}

func (o Options) withDefaults() Options {
	if o.Namespace == "" {
		o.Namespace = config.DefaultNamespace
	}
	if o.Authority == "" {
		o.Authority = config.DefaultAuthority
	}
	if o.IstioNamespace == "" {
		o.IstioNamespace = config.DefaultIstioNamespace
	}
	if o.Now.IsZero() {
		o.Now = time.Now()
	}
	return o
}

// labelRule is the fix for a cluster name whose problem pkg/pki names
// without one.
const labelRule = "a cluster name is a DNS-1123 label: at most 63 lowercase letters, digits and hyphens, starting and ending with a letter or digit"

// Validate returns the first problem of o, in one line that names the value
// and the fix; empty names are taken as their defaults.
func (o Options) Validate() error {
	o = o.withDefaults()
	if _, err := ParseArchitecture(string(o.Architecture)); err != nil {
		return err
	}
	if err := pki.CheckDNSLabel(o.Namespace); err != nil {
		return fmt.Errorf("invalid namespace: %w", err)
	}
	if err := pki.CheckDNSLabel(o.IstioNamespace); err != nil {
		return fmt.Errorf("invalid Istio namespace: %w", err)
	}
	if err := pki.CheckDNSName(o.Authority, false); err != nil {
		return fmt.Errorf("invalid authority: %w", err)
	}
	return checkClusters(o.Clusters)
}

// checkClusters refuses an empty list, a name that is not a DNS-1123 label,
// the reserved name Management, and a name given twice.
func checkClusters(clusters []string) error {
	if len(clusters) == 0 {
		return fmt.Errorf("no workload clusters: name at least one, such as %q", "cluster-1")
	}
	seen := make(map[string]bool, len(clusters))
	for _, c := range clusters {
		switch {
		case c == "":
			return fmt.Errorf("a cluster name is empty: remove the empty entry from the list of clusters")
		case c == Management:
			return fmt.Errorf("cluster name %q is reserved for the management cluster's secrets: give the workload cluster another name", c)
		case seen[c]:
			return fmt.Errorf("cluster %q is listed twice: list each workload cluster once", c)
		}
		if err := pki.CheckDNSLabel(c); err != nil {
			if strings.Contains(err.Error(), ": use ") {
				return fmt.Errorf("invalid cluster name: %w", err)
			}
			return fmt.Errorf("invalid cluster name: %w (%s)", err, labelRule)
		}
		seen[c] = true
	}
	return nil
}
