package app

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshrelay/meshrelay/internal/relayctl/fleet"
	"github.com/meshrelay/meshrelay/pkg/bootstraptoken"
	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/pkg/pki"
)

func newRegisterCommand(g *globalFlags) *cobra.Command {
	var (
		remoteContext, output string
		force                 bool
		dryRun                dryRunFlag
		tokenTTL              time.Duration
	)
	cmd := &cobra.Command{
		Use:   "register NAME --remote-context REMOTE [--context MGMT]",
		Short: "Register a workload cluster: copy the root CA to it, issue it its own bootstrap token, create its KubernetesCluster",
		Long: `register registers a workload cluster as one command, so that its agent can bootstrap:
it copies ca.crt of relay-root-tls-secret from the management cluster into the workload
cluster's namespace (-n), issues the cluster a bootstrap token of its own and writes it into
the workload cluster's relay-identity-token-secret, and creates KubernetesCluster NAME on
the management cluster (or updates it), where only the token's SHA-256 and expiry are
kept, as annotations.

The token is bound to NAME: relay-server refuses it for any other cluster. It is single
use (the first certificate it gets spends it) and expires after --token-ttl (default 1h).
NAME must be a DNS-1123 label: it becomes the client certificate's DNS name.

Everything is checked before anything changes; a workload relay-root-tls-secret that
holds a different ca.crt is replaced only with --force, which also deletes a workload
relay-client-tls-secret whose certificate does not chain to the copied roots (the agent
bootstraps with the fresh token instead). Running register again issues a
fresh token and replaces the old one: it is how an agent whose client certificate expired
or was revoked gets a new one, without a restart (an agent whose certificate is fine
bootstraps again too).

--dry-run=client prints what would change; --dry-run=server also sends every write, so
that the API servers' admission (the relay webhook included) and RBAC judge it, and
nothing is kept.

` + exitCodesHelp + `

Flags named before --context (--mgmt-context) still work.`,
		Example: `  relayctl register cluster-1 --context mgmt --remote-context cluster-1
  # an agent whose certificate expired: a fresh token, valid for 10 minutes
  relayctl register cluster-1 --context mgmt --remote-context cluster-1 --token-ttl 10m
  # what would change, judged by both API servers, nothing kept
  relayctl register cluster-1 --context mgmt --remote-context cluster-1 --dry-run=server`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if err := pki.CheckDNSLabel(name); err != nil {
				return usageError(fmt.Errorf("cluster name %q: %w", name, err))
			}
			if err := checkOutputFormat(output); err != nil {
				return err
			}
			if err := bootstraptoken.CheckTTL(tokenTTL); err != nil {
				return usageError(fmt.Errorf("--token-ttl: %w", err))
			}
			if remoteContext == "" {
				return usageError(errors.New("--remote-context is required: the workload cluster's kubeconfig context (--context is the management cluster's)"))
			}
			dryRun.warn(cmd.ErrOrStderr())
			mgmt, err := connect(g, g.context)
			if err != nil {
				return err
			}
			remote, err := connect(g, remoteContext)
			if err != nil {
				return err
			}
			srv, ag := config.DefaultServer(), config.DefaultAgent()
			srv.Namespace, ag.Namespace = g.namespace, g.namespace
			steps, err := fleet.Register(cmd.Context(), mgmt, remote, fleet.RegisterOptions{Name: name, Server: &srv, Agent: &ag, Force: force, DryRun: dryRun.mode, TokenTTL: tokenTTL})
			if err != nil {
				return err
			}
			mgmtName := g.contextName(g.context)
			rep := registration{Cluster: name, DryRun: dryRun.mode, Steps: steps}
			return printResult(cmd.OutOrStdout(), output, kindRegister, rep, func() string {
				// One line per object written, as kubectl apply prints them.
				var b strings.Builder
				for _, s := range steps {
					ctx := mgmtName
					if s.Cluster == "workload" {
						ctx = remoteContext
					}
					fmt.Fprintf(&b, "%s (%s): %s %s\n", ctx, s.Cluster, s.Object, s.Action)
				}
				if dryRun.mode == fleet.DryRunNone {
					fmt.Fprintf(&b, "cluster %s is registered: install its agent with cluster name %s (MESHRELAY_CLUSTER=%s)\n", name, name, name)
					if exp := tokenExpiry(steps); exp != nil {
						fmt.Fprintf(&b, "its bootstrap token is single use and expires at %s: an agent that has not bootstrapped by then needs a fresh one (run this command again)\n", exp.UTC().Format(time.RFC3339))
					}
				}
				return b.String()
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&remoteContext, "remote-context", "", "kubeconfig context of the workload cluster")
	deprecatedAlias(cmd, "mgmt-context", "context", &g.context)
	f.BoolVar(&force, "force", false, "replace a workload relay-root-tls-secret that holds a different ca.crt")
	f.DurationVar(&tokenTTL, "token-ttl", bootstraptoken.DefaultTTL, "how long the new bootstrap token may be used, between 1m and 168h (7 days)")
	bindDryRun(cmd, &dryRun, "what would change")
	outputFlag(cmd, &output)
	completeContexts(cmd, "mgmt-context", "remote-context")
	return cmd
}

// registration is register's report.
type registration struct {
	Cluster string       `json:"cluster"`
	DryRun  fleet.DryRun `json:"dryRun,omitempty"`
	Steps   []fleet.Step `json:"steps"`
}

// tokenExpiry returns when the bootstrap token register wrote expires.
func tokenExpiry(steps []fleet.Step) *time.Time {
	for _, s := range steps {
		if s.TokenExpires != nil {
			return s.TokenExpires
		}
	}
	return nil
}
