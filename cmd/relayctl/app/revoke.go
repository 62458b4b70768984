package app

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshrelay/meshrelay/internal/relayctl/fleet"
	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/pkg/pki"
)

func newRevokeCommand() *cobra.Command {
	var (
		kubeconfig, mgmtContext, namespace, output string
		serials                                    []string
	)
	cmd := &cobra.Command{
		Use:   "revoke NAME --mgmt-context MGMT [--serial HEX]...",
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
revocation record.`,
		Example: `  relayctl revoke cluster-1 --mgmt-context mgmt
  relayctl revoke cluster-1 --mgmt-context mgmt --serial 3F:A2:09:5C --serial 7b01c2d4`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if err := pki.CheckDNSLabel(name); err != nil {
				return fmt.Errorf("cluster name %q: %w", name, err)
			}
			if err := checkOutputFormat(output); err != nil {
				return err
			}
			for _, s := range serials {
				if _, err := fleet.NormalizeSerial(s); err != nil {
					return err
				}
			}
			if mgmtContext == "" {
				return errors.New("--mgmt-context is required: the management cluster's kubeconfig context")
			}
			mgmt, err := connect(kubeconfig, mgmtContext)
			if err != nil {
				return err
			}
			got, err := fleet.Revoke(cmd.Context(), mgmt, fleet.RevokeOptions{Name: name, Namespace: namespace, Serials: serials})
			if err != nil {
				return err
			}
			return printResult(cmd.OutOrStdout(), output, got, func() string {
				var b strings.Builder
				object := fmt.Sprintf("KubernetesCluster %s/%s", got.Namespace, got.Cluster)
				if len(serials) == 0 {
					fmt.Fprintf(&b, "%s (%s): certificates issued before %s are revoked\n", mgmtContext, object, got.IssuedBefore.UTC().Format(time.RFC3339))
				} else {
					fmt.Fprintf(&b, "%s (%s): %d serial(s) added, %d revoked in all\n", mgmtContext, object, len(got.Added), len(got.Serials))
				}
				fmt.Fprintf(&b, "relay-server refuses them at the handshake and at Renew and closes their streams within a second\n")
				fmt.Fprintf(&b, "to let cluster %s back: relayctl register %s --mgmt-context %s --remote-context <its context> issues a fresh bootstrap token, with which the agent bootstraps at once\n", name, name, mgmtContext)
				return b.String()
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&kubeconfig, "kubeconfig", "", "path of the kubeconfig; empty means $KUBECONFIG, then ~/.kube/config")
	f.StringVar(&mgmtContext, "mgmt-context", "", "kubeconfig context of the management cluster")
	f.StringVar(&namespace, "namespace", config.DefaultNamespace, "namespace of the KubernetesClusters on the management cluster")
	f.StringArrayVar(&serials, "serial", nil, "revoke only the certificate with this serial number, in hexadecimal (openssl's 0A:1B:… form too); repeatable")
	outputFlag(cmd, &output)
	completeContexts(cmd, "mgmt-context")
	return cmd
}
