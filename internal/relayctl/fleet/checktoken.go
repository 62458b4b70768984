package fleet

import (
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
	"github.com/meshrelay/meshrelay/pkg/bootstraptoken"
)

// sharedToken reports the management cluster's shared identity token: a
// warning while it exists, since whoever holds it can bootstrap any
// registered cluster that was never bootstrapped.
func (c *checker) sharedToken(side string, key types.NamespacedName) {
	c.add(side, "secret "+key.String(), Warning,
		"the shared identity token exists: whoever holds it can bootstrap any registered cluster that was never bootstrapped; "+
			"once every cluster has bootstrapped, delete it (kubectl -n %s delete secret %s) and start relay-server with --disable-token-generation, "+
			"or start it with --disable-shared-token (disableSharedToken); clusters bootstrap with their own tokens from relayctl register",
		key.Namespace, key.Name)
}

// bootstrapToken reports cluster name's bootstrap token: its record on the
// KubernetesCluster kc (nil when not registered) against the workload
// token secret tok (nil when absent). An expired or missing token matters
// only while the agent has no usable client certificate (clientValid).
func (c *checker) bootstrapToken(name string, kc *v1alpha1.KubernetesCluster, tok *corev1.Secret, tokKey types.NamespacedName, clientValid bool) {
	if kc == nil {
		return
	}
	check := "bootstrap token"
	bad := Problem
	if clientValid {
		bad = Warning
	}
	var workload []byte
	if tok != nil {
		workload = tok.Data[c.o.Agent.TokenSecret.Key]
	}
	rec, err := bootstraptoken.Read(kc.Annotations)
	switch {
	case err != nil:
		c.add(name, check, bad, "KubernetesCluster %s/%s: %v", kc.Namespace, kc.Name, err)
	case rec != nil && rec.Expired(c.o.Now):
		c.add(name, check, bad, "the bootstrap token issued for %s expired unused at %s: issue a fresh one with relayctl register %s",
			name, rec.Expires.UTC().Format(time.RFC3339), name)
	case rec != nil && !rec.Matches(string(workload)):
		c.add(name, check, bad, "secret %s does not hold the token issued for %s (the management cluster keeps its hash): run relayctl register %s again",
			tokKey, name, name)
	case rec != nil:
		c.add(name, check, OK, "unused, single use, expires at %s", rec.Expires.UTC().Format(time.RFC3339))
	case clientValid:
		c.add(name, check, OK, "none unused; the agent holds a valid client certificate")
	case len(workload) > 0 && tokensEqual(workload, c.token):
		if at, ok := bootstraptoken.Bootstrapped(kc.Annotations); ok {
			c.add(name, check, Problem, "secret %s holds the shared identity token, which bootstraps a cluster only once, and %s was bootstrapped at %s: issue it its own token with relayctl register %s",
				tokKey, name, at.UTC().Format(time.RFC3339), name)
		} else {
			c.add(name, check, OK, "the shared identity token, usable once for %s", name)
		}
	default:
		c.add(name, check, Problem, "no unused bootstrap token for %s and no valid client certificate: the agent cannot bootstrap; issue a token with relayctl register %s", name, name)
	}
}

// tokensEqual reports whether the workload token is the shared one.
func tokensEqual(workload, shared []byte) bool {
	return len(shared) > 0 && string(workload) == string(shared)
}
