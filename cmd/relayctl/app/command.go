// Package app builds the relayctl command tree.
package app

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/meshrelay/meshrelay/pkg/version"
)

// pluginName is the name kubectl finds relayctl under, as `kubectl relay`.
const pluginName = "kubectl-relay"

// NewCommand returns the relayctl root command, named for how it was
// invoked: as kubectl-relay it presents itself as `kubectl relay`.
func NewCommand() *cobra.Command {
	return newCommandAs(filepath.Base(os.Args[0]))
}

// newCommandAs returns the root command for the executable name invoked.
func newCommandAs(invoked string) *cobra.Command {
	g := &globalFlags{}
	root := &cobra.Command{
		Use:   "relayctl",
		Short: "Install, register, check and troubleshoot meshrelay across clusters",
		Long: `relayctl is the command line for meshrelay. It registers workload clusters with the
management cluster (copying the identity token and root CA) and revokes their certificates,
checks that every relay secret is present and consistent across clusters, validates
manifests offline with the same checks as the admission webhook, backs up and restores the
generated certificates, asks relay-server to rotate them and shows where rotations stand,
and generates the certificate architectures of the reference documentation. Installed as
kubectl-relay on the PATH, it also runs as "kubectl relay".

The flags below apply to every command, as in kubectl: --context is the management
cluster (--remote-context names a workload cluster), -n the namespace of the relay
secrets on every cluster, --request-timeout bounds each request, and -v sets the log
verbosity. Commands print for people by default and -o json|yaml for machines; written
reports carry apiVersion ` + reportAPIVersion + ` and a kind. Commands that write take
--dry-run=client (print what would be written) or --dry-run=server (send it, persist
nothing).

` + exitCodesHelp,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if _, err := g.timeout(); err != nil {
				return err
			}
			warnDeprecated(cmd, cmd.ErrOrStderr())
			g.startLogging()
			return nil
		},
	}
	g.bind(root.PersistentFlags())
	completeContexts(root, "context")
	root.AddCommand(newRegisterCommand(g), newRevokeCommand(g), newCheckCommand(g), newValidateCommand(g),
		newBackupCommand(g), newRestoreCommand(g), newRotateCommand(g), newGenCommand(g), newVersionCommand())
	if invoked == pluginName {
		asPlugin(root)
	}
	setExitCodes(root)
	return root
}

// asPlugin makes root present itself as `kubectl relay`: its usage lines
// and examples name the command kubectl users type.
func asPlugin(root *cobra.Command) {
	root.Use = "relay"
	root.Annotations = map[string]string{cobra.CommandDisplayNameAnnotation: "kubectl relay"}
	var walk func(*cobra.Command)
	walk = func(cmd *cobra.Command) {
		cmd.Example = strings.ReplaceAll(cmd.Example, "relayctl ", "kubectl relay ")
		for _, sub := range cmd.Commands() {
			walk(sub)
		}
	}
	walk(root)
}

func newVersionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print relayctl's version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprintf(cmd.OutOrStdout(), "%s %s\n", cmd.Root().DisplayName(), version.String())
			return err
		},
	}
}
