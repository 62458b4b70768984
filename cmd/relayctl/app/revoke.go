package app

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshrelay/meshrelay/internal/relayctl/fleet"
	"github.com/meshrelay/meshrelay/pkg/pki"
)

func newRevokeCommand(g *globalFlags) *cobra.Command {
	var (
		output  string
		serials []string
		dryRun  dryRunFlag
	)
	cmd := &cobra.Command{
		Use:   "revoke NAME [--context MGMT] [--serial HEX]...",
		Short: "Revoke a workload cluster's client certificates: all of them, or by serial",
		Long: `revoke writes a revocation into KubernetesCluster NAME on the management cluster.
Without --serial, every certificate of the cluster issued until now is revoked
(spec.revocation.issuedBefore); with --serial, only those serial numbers
(spec.revocation.serials, at most 256). Every relay-server replica then refuses
those certificates at the handshake and at Renew, and closes the streams that
use them within a second.

The cluster gets back with a new certificate: relayctl register NAME issues a fresh
bootstrap token, with which its agent bootstraps at once, though its revoked
certificate has not expired. Deleting and re-creating the KubernetesCluster also
refuses every certificate the server signed for it before, but drops its
revocation record.

--dry-run=client prints the revocation without writing it; --dry-run=server sends it
for the API server to check, and nothing is kept.

` + exitCodesHelp + `

Flags named before --context (--mgmt-context) still work.`,
		Example: `  relayctl revoke cluster-1 --context mgmt
  relayctl revoke cluster-1 --context mgmt --serial 3F:A2:09:5C --serial 7b01c2d4`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if err := pki.CheckDNSLabel(name); err != nil {
				return usageError(fmt.Errorf("cluster name %q: %w", name, err))
			}
			if err := checkOutputFormat(output); err != nil {
				return err
			}
			for _, s := range serials {
				if _, err := fleet.NormalizeSerial(s); err != nil {
					return usageError(err)
				}
			}
			dryRun.warn(cmd.ErrOrStderr())
			mgmt, err := connect(g, g.context)
			if err != nil {
				return err
			}
			got, err := fleet.Revoke(cmd.Context(), mgmt, fleet.RevokeOptions{Name: name, Namespace: g.namespace, Serials: serials, DryRun: dryRun.mode})
			if err != nil {
				return err
			}
			mgmtName := g.contextName(g.context)
			return printResult(cmd.OutOrStdout(), output, kindRevoke, got, func() string {
				var b strings.Builder
				object := fmt.Sprintf("KubernetesCluster %s/%s", got.Namespace, got.Cluster)
				are := "are"
				switch dryRun.mode {
				case fleet.DryRunClient:
					are = "would be"
				case fleet.DryRunServer:
					are = "would be (server dry run)"
				}
				if len(serials) == 0 {
					fmt.Fprintf(&b, "%s (%s): certificates issued before %s %s revoked\n", mgmtName, object, got.IssuedBefore.UTC().Format(time.RFC3339), are)
				} else {
					fmt.Fprintf(&b, "%s (%s): %d serial(s) added, %d revoked in all\n", mgmtName, object, len(got.Added), len(got.Serials))
				}
				if dryRun.mode != fleet.DryRunNone {
					fmt.Fprintf(&b, "dry run: nothing was written\n")
					return b.String()
				}
				fmt.Fprintf(&b, "relay-server refuses them at the handshake and at Renew and closes their streams within a second\n")
				fmt.Fprintf(&b, "to let cluster %s back: relayctl register %s --context %s --remote-context <its context> issues a fresh bootstrap token, with which the agent bootstraps at once\n", name, name, mgmtName)
				return b.String()
			})
		},
	}
	f := cmd.Flags()
	deprecatedAlias(cmd, "mgmt-context", "context", &g.context)
	bindDryRun(cmd, &dryRun, "the revocation")
	f.StringArrayVar(&serials, "serial", nil, "revoke only the certificate with this serial number, in hexadecimal (openssl's 0A:1B:… form too); repeatable")
	outputFlag(cmd, &output)
	completeContexts(cmd, "mgmt-context")
	return cmd
}
