// Package app builds the relayctl command tree.
package app

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/meshrelay/meshrelay/pkg/version"
)

// NewCommand returns the relayctl root command.
func NewCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "relayctl",
		Short: "Install, register, check and troubleshoot meshrelay across clusters",
		Long: `relayctl is the command line for meshrelay. It registers workload clusters with the
management cluster (copying the identity token and root CA) and revokes their certificates,
checks that every relay secret is present and consistent across clusters, validates
manifests offline with the same checks as the admission webhook, backs up and restores the
generated certificates, and generates the certificate architectures of the reference
documentation.

Every command takes --kubeconfig and one or more contexts, prints for people by default
and -o json|yaml for machines, and exits non-zero when it finds a problem.

Status: every command works: register, revoke, check, validate, backup, restore, gen and version.`,
		Args: cobra.NoArgs,
	}
	root.AddCommand(newRegisterCommand(), newRevokeCommand(), newCheckCommand(), newValidateCommand(), newBackupCommand(), newRestoreCommand(), newGenCommand(), newVersionCommand())
	return root
}

func newVersionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print relayctl's version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprintf(cmd.OutOrStdout(), "relayctl %s\n", version.String())
			return err
		},
	}
}
