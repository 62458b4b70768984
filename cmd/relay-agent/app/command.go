// Package app builds the relay-agent command.
package app

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/meshrelay/meshrelay/internal/command"
	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/pkg/version"
	"github.com/meshrelay/meshrelay/relay/agent"
)

// NewCommand returns the relay-agent command.
func NewCommand() *cobra.Command {
	cfg := config.DefaultAgent()
	cfg.ApplyEnvironment(os.Getenv)
	var (
		configFile string
		kube       command.KubeFlags
		logs       command.LogFlags
	)
	cmd := &cobra.Command{
		Use:   "relay-agent",
		Short: "Relay agent: the workload cluster's mTLS client of the relay server",
		Long: `relay-agent runs in each workload cluster. It establishes trust with the relay server in
one of three ways: the identity token and root CA (relay-identity-token-secret and
relay-root-tls-secret: it bootstraps and stores relay-client-tls-secret), a client certificate
provided in relay-client-tls-secret, or a root key in relay-root-tls-secret (it issues its own).
With none of these it waits and says which secret is missing.

Every replica watches the client secret and keeps push and pull streams to the server open
over mutual TLS, reconnecting with backoff. The replica holding the Lease renews the
certificate when clientTlsSecretRotationGracePeriodRatio of its lifetime is left, earlier
when the server sets a time or asks, and bootstraps again if it has expired. Only a
certificate the relay server issued is renewed: one from another issuer (yours,
cert-manager's, relayctl gen's) or in a secret managed by cert-manager (or annotated
meshrelay.dev/managed-elsewhere=true) is only watched and used.

With --trust-bundle-dir (MESHRELAY_TRUST_BUNDLE_DIR, which the install manifests set) the
roots that verify the server are the certificates in that folder, where the Deployment
mounts relay-root-tls-secret's ca.crt and the relay ClusterTrustBundle; the folder is
watched, and the agent does not read the root secret. With or without it, the trust bundle
the server pushes (a root rotation) counts at once, and the Lease holder stores it in
relay-root-tls-secret's ca.crt and the ClusterTrustBundle meshrelay.dev:relay-root:<namespace>.

Settings come from flags and from --config, a YAML file that takes the names of the agent's
relay settings (glooAgent.relay.* in a Helm values file: serverAddress, authority,
clientTlsSecret: {name: ...}, clientTlsSecretRotationGracePeriodRatio, ...); a flag given on the
command line wins over the file, and the file over MESHRELAY_CLUSTER, MESHRELAY_SERVER_ADDRESS,
MESHRELAY_AUTHORITY and MESHRELAY_TRUST_BUNDLE_DIR, which relay-webhook injects into agent pods.

The install manifests and the Helm chart run it as the Deployment relay-agent in namespace
gloo-mesh of each workload cluster.`,
		Version: version.String(),
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := config.Load(cmd.Flags(), configFile, &cfg); err != nil {
				return err
			}
			if err := cfg.Validate(); err != nil {
				return fmt.Errorf("invalid relay-agent settings: %w", err)
			}
			rest, err := kube.RESTConfig()
			if err != nil {
				return err
			}
			log := logs.Logger()
			a, err := agent.New(agent.Options{Config: cfg, RESTConfig: rest, Log: log, Replica: os.Getenv("POD_NAME")})
			if err != nil {
				return err
			}
			return a.Run(cmd.Context())
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&configFile, "config", "", "YAML or JSON settings file; flags given on the command line win over it")
	config.BindAgent(fs, &cfg)
	kube.Bind(fs)
	logs.Bind(fs)
	return cmd
}
