package app

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/meshrelay/meshrelay/internal/relayctl/fleet"
	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/pkg/pki"
)

func newRegisterCommand() *cobra.Command {
	var (
		kubeconfig, mgmtContext, remoteContext, namespace, output string
		force, dryRun                                             bool
	)
	cmd := &cobra.Command{
		Use:   "register NAME --mgmt-context MGMT --remote-context REMOTE",
		Short: "Register a workload cluster: copy the token and root CA to it and create its KubernetesCluster",
		Long: `register does the manual steps of registering a workload cluster as one command:
it copies ca.crt of relay-root-tls-secret and the identity token of
relay-identity-token-secret from the management cluster into the workload cluster's
namespace, then creates KubernetesCluster NAME on the management cluster, so that the
agent can bootstrap. NAME must be a DNS-1123 label: it becomes the client certificate's
DNS name. Everything is checked before anything changes; a workload secret that holds a
different value is replaced only with --force. Running it again changes nothing.`,
		Example: `  relayctl register cluster-1 --mgmt-context mgmt --remote-context cluster-1`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if err := pki.CheckDNSLabel(name); err != nil {
				return fmt.Errorf("cluster name %q: %w", name, err)
			}
			if err := checkOutputFormat(output); err != nil {
				return err
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
			steps, err := fleet.Register(cmd.Context(), mgmt, remote, fleet.RegisterOptions{Name: name, Server: &srv, Agent: &ag, Force: force, DryRun: dryRun})
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
	f.BoolVar(&force, "force", false, "replace workload secrets that hold a different root or token")
	f.BoolVar(&dryRun, "dry-run", false, "check and print what would change, change nothing")
	outputFlag(cmd, &output)
	completeContexts(cmd, "mgmt-context", "remote-context")
	return cmd
}
