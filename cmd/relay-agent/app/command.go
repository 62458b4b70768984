// Package app builds the relay-agent command.
package app

import (
	"github.com/spf13/cobra"

	"github.com/meshrelay/meshrelay/pkg/cli"
	"github.com/meshrelay/meshrelay/pkg/version"
)

// NewCommand returns the relay-agent command.
func NewCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "relay-agent",
		Short: "Relay agent: gets, stores, watches and rotates a workload cluster's client certificate",
		Long: `relay-agent runs in each workload cluster. It establishes trust with the relay server
(identity token and root CA, a directly provided client certificate, or a root key that lets
it issue its own), stores its client certificate in relay-client-tls-secret, watches that
secret, renews the certificate before it expires (leader only), and keeps its push and pull
streams to the server open over mutual TLS.

Status: the agent itself lands with the relay issue; this build only prints help and version.`,
		Version: version.String(),
		Args:    cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			return cli.NotYetBuilt("relay-agent")
		},
	}
}
