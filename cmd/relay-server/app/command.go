// Package app builds the relay-server command.
package app

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/meshrelay/meshrelay/internal/command"
	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/pkg/version"
	"github.com/meshrelay/meshrelay/relay/server"
)

// NewCommand returns the relay-server command.
func NewCommand() *cobra.Command {
	cfg := config.DefaultServer()
	var (
		configFile string
		kube       command.KubeFlags
		logs       command.LogFlags
	)
	cmd := &cobra.Command{
		Use:   "relay-server",
		Short: "Relay server: certificate authority and mTLS gRPC endpoint for relay agents",
		Long: `relay-server runs in the management cluster. It is the certificate authority for relay
agents: it creates the root CA, the intermediate signing CA, its own serving certificate and
the shared identity token (each only if absent, never overwriting), checks an agent's
bootstrap token (its cluster's own single-use token from relayctl register, or the shared
token once per cluster), signs the CSR for its registered cluster name (a KubernetesCluster
in --namespace), and serves gRPC over mutual TLS on :9900 with metrics, /healthz and /readyz
on :9091. It reloads its credentials when their secrets change, without dropping streams.

Settings come from flags and from --config, a YAML file that takes the names of the
management server's relay settings (glooMgmtServer.relay.* in a Helm values file: disableCa,
signingTlsSecret: {name: ...}, tokenSecret: {name, key, namespace}, ...); a flag given on the
command line wins over the file.

The install manifests and the Helm chart run it as the Deployment and Service
gloo-mesh-mgmt-server in namespace gloo-mesh.`,
		Version: version.String(),
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := config.Load(cmd.Flags(), configFile, &cfg); err != nil {
				return err
			}
			if err := cfg.Validate(); err != nil {
				return fmt.Errorf("invalid relay-server settings: %w", err)
			}
			rest, err := kube.RESTConfig()
			if err != nil {
				return err
			}
			log := logs.Logger()
			srv, err := server.New(server.Options{Config: cfg, RESTConfig: rest, Log: log})
			if err != nil {
				return err
			}
			log.Info("starting relay-server", "version", version.String(), "namespace", cfg.Namespace)
			return srv.Run(cmd.Context())
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&configFile, "config", "", "YAML or JSON settings file; flags given on the command line win over it")
	config.BindServer(fs, &cfg)
	kube.Bind(fs)
	logs.Bind(fs)
	return cmd
}
