package rotation

import (
	"fmt"
	"strings"
	"time"

	"github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
	"github.com/meshrelay/meshrelay/pkg/config"
)

// Step is one step of a rotation as relay-server's leader takes it: what
// it does, and what it waits for before the next one.
type Step struct {
	// Phase is the RelayTrust phase of a root rotation's step; empty for
	// the one step of an intermediate or server rotation.
	Phase v1alpha1.RotationPhase `json:"phase,omitempty"`
	Does  string                 `json:"does"`
	// WaitsFor is what must hold before the next step; empty when nothing.
	WaitsFor []string `json:"waitsFor,omitempty"`
}

// Plan returns the steps of a rotation of c. now is RotationRequest.Now:
// it drops the minimum time a root rotation spends in Prepare and in
// Activate (rootRotationOverlap), never a wait for the agents.
func Plan(c Certificate, now bool) []Step {
	switch c {
	case Root:
		return rootPlan(now)
	case Intermediate:
		return []Step{{
			Does: "a new signing intermediate under the current root is written to relay-tls-signing-secret and signs every client certificate from then on; " +
				"the one it replaces stays there as previous.crt, so the client certificates it issued are still admitted; " +
				"agents are told when to renew, spread within renewalBudget",
			WaitsFor: []string{
				"no root rotation in Prepare or Activate (a root rotation brings its own intermediate)",
				"no live client certificate to come from the intermediate before the current one, which this rotation stops admitting",
			},
		}}
	case Server:
		return []Step{{
			Does: "a new serving certificate under the current root is written to relay-server-tls-secret; " +
				"every relay-server replica serves it from the next handshake, and open streams stay up",
			WaitsFor: []string{"no root rotation in Prepare, whose new root not every agent trusts yet"},
		}}
	}
	return nil
}

func rootPlan(now bool) []Step {
	overlap := fmt.Sprintf("at least rootRotationOverlap (relay-server's setting, %s by default) in this phase", ShortDuration(config.DefaultRootRotationOverlap))
	if now {
		overlap = ""
	}
	waits := func(w ...string) []string {
		var out []string
		for _, s := range w {
			if s != "" {
				out = append(out, s)
			}
		}
		return out
	}
	return []Step{
		{
			Phase: v1alpha1.PhasePrepare,
			Does: "a new root joins the trust bundle beside the current one: relay-root-tls-secret's ca.crt, the ClusterTrustBundle, " +
				"and every connected agent, which stores it in its own cluster; the current root still signs",
			WaitsFor: waits("every connected agent to acknowledge the bundle with both roots", overlap),
		},
		{
			Phase: v1alpha1.PhaseActivate,
			Does: "a new signing intermediate under the new root signs client certificates, the server certificate is reissued under the new root, " +
				"and agents are told when to renew, spread within renewalBudget",
			WaitsFor: waits("no live client certificate of any cluster to chain to the old root", overlap),
		},
		{
			Phase:    v1alpha1.PhaseRetire,
			Does:     "the old root leaves the trust bundle",
			WaitsFor: waits("every connected agent to acknowledge the bundle without it"),
		},
		{
			Phase: v1alpha1.PhaseStable,
			Does:  "one root again; status.rotations.root counts the rotation",
		},
	}
}

// ShortDuration prints d as people write lifetimes: 24h, 90m, 1h30m.
func ShortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}
