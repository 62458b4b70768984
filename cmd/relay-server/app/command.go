// Package app builds the relay-server command.
package app

import (
	"github.com/spf13/cobra"

	"github.com/meshrelay/meshrelay/pkg/cli"
	"github.com/meshrelay/meshrelay/pkg/version"
)

// NewCommand returns the relay-server command.
func NewCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "relay-server",
		Short: "Relay server: certificate authority and mTLS gRPC endpoint for relay agents",
		Long: `relay-server runs in the management cluster. It is the certificate authority for relay
agents: it creates the root CA, the intermediate signing CA, its own serving certificate and
the identity token (each only if absent), checks an agent's identity token, signs the CSR
for its registered cluster name, and serves gRPC over mutual TLS on :9900 with metrics on
:9091/metrics. It reloads its own credentials when their secrets change.

Status: the server itself lands with the relay issue; this build only prints help and version.`,
		Version: version.String(),
		Args:    cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			return cli.NotYetBuilt("relay-server")
		},
	}
}
