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

func newRegisterCommand() *cobra.Command {
	var (
		kubeconfig, mgmtContext, remoteContext, namespace, output string
		force, dryRun                                             bool
		tokenTTL                                                  time.Duration
	)
	cmd := &cobra.Command{
		Use:   "register NAME --mgmt-context MGMT --remote-context REMOTE",
		Short: "Register a workload cluster: copy the root CA to it, issue it its own bootstrap token, create its KubernetesCluster",
		Long: `register registers a workload cluster as one command, so that its agent can bootstrap:
it copies ca.crt of relay-root-tls-secret from the management cluster into the workload
cluster's namespace, issues the cluster a bootstrap token of its own and writes it into
the workload cluster's relay-identity-token-secret, and creates KubernetesCluster NAME on
the management cluster (or updates it), where only the token's SHA-256 and expiry are
kept, as annotations.

The token is bound to NAME: relay-server refuses it for any other cluster. It is single
use (the first certificate it gets spends it) and expires after --token-ttl (default 1h).
NAME must be a DNS-1123 label: it becomes the client certificate's DNS name.

Everything is checked before anything changes; a workload relay-root-tls-secret that
holds a different ca.crt is replaced only with --force. Running register again issues a
fresh token and replaces the old one: it is how an agent whose client certificate expired
or was revoked gets a new one, without a restart (an agent whose certificate is fine
bootstraps again too).`,
		Example: `  relayctl register cluster-1 --mgmt-context mgmt --remote-context cluster-1
  # an agent whose certificate expired: a fresh token, valid for 10 minutes
  relayctl register cluster-1 --mgmt-context mgmt --remote-context cluster-1 --token-ttl 10m`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if err := pki.CheckDNSLabel(name); err != nil {
				return fmt.Errorf("cluster name %q: %w", name, err)
			}
			if err := checkOutputFormat(output); err != nil {
				return err
			}
			if err := bootstraptoken.CheckTTL(tokenTTL); err != nil {
				return fmt.Errorf("--token-ttl: %w", err)
			}
			if mgmtContext == "" || remoteContext == "" {
				return errors.New("--mgmt-context and --remote-context are both required: the management cluster's and the workload cluster's kubeconfig contexts")
			}
			mgmt, err := connect(kubeconfig, mgmtContext)
			if err != nil {
				return err
			}
			remote, err := connect(kubeconfig, remoteContext)
			if err != nil {
				return err
			}
			srv, ag := config.DefaultServer(), config.DefaultAgent()
			srv.Namespace, ag.Namespace = namespace, namespace
			steps, err := fleet.Register(cmd.Context(), mgmt, remote, fleet.RegisterOptions{Name: name, Server: &srv, Agent: &ag, Force: force, DryRun: dryRun, TokenTTL: tokenTTL})
			if err != nil {
				return err
			}
			return printResult(cmd.OutOrStdout(), output, steps, func() string {
				var b strings.Builder
				for _, s := range steps {
					ctx := mgmtContext
					if s.Cluster == "workload" {
						ctx = remoteContext
					}
					fmt.Fprintf(&b, "%s (%s): %s %s\n", ctx, s.Cluster, s.Object, s.Action)
				}
				if !dryRun {
					fmt.Fprintf(&b, "cluster %s is registered: install the agent with MESHRELAY_CLUSTER=%s (manifests/overlays/workload/settings.env)\n", name, name)
					if exp := tokenExpiry(steps); exp != nil {
						fmt.Fprintf(&b, "its bootstrap token is single use and expires at %s: an agent that has not bootstrapped by then needs a fresh one (run this command again)\n", exp.UTC().Format(time.RFC3339))
					}
				}
				return b.String()
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&kubeconfig, "kubeconfig", "", "path of the kubeconfig holding both contexts; empty means $KUBECONFIG, then ~/.kube/config")
	f.StringVar(&mgmtContext, "mgmt-context", "", "kubeconfig context of the management cluster")
	f.StringVar(&remoteContext, "remote-context", "", "kubeconfig context of the workload cluster")
	f.StringVar(&namespace, "namespace", config.DefaultNamespace, "namespace of the relay secrets and KubernetesClusters on both clusters")
	f.BoolVar(&force, "force", false, "replace a workload relay-root-tls-secret that holds a different ca.crt")
	f.DurationVar(&tokenTTL, "token-ttl", bootstraptoken.DefaultTTL, "how long the new bootstrap token may be used, between 1m and 168h (7 days)")
	f.BoolVar(&dryRun, "dry-run", false, "check and print what would change, change nothing")
	outputFlag(cmd, &output)
	completeContexts(cmd, "mgmt-context", "remote-context")
	return cmd
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
