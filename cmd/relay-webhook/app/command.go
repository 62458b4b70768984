// Package app builds the relay-webhook command.
package app

import (
	"fmt"
	"net"
	"os"

	"github.com/spf13/cobra"

	"github.com/meshrelay/meshrelay/internal/command"
	meshv1alpha1 "github.com/meshrelay/meshrelay/pkg/apis/v1alpha1"
	"github.com/meshrelay/meshrelay/pkg/config"
	"github.com/meshrelay/meshrelay/pkg/version"
	"github.com/meshrelay/meshrelay/webhook"
)

// NewCommand returns the relay-webhook command.
func NewCommand() *cobra.Command {
	cfg := config.DefaultWebhook()
	cfg.ApplyEnvironment(os.Getenv)
	var (
		servingIPs []net.IP
		configFile string
		kube       command.KubeFlags
		logs       command.LogFlags
	)
	cmd := &cobra.Command{
		Use:   "relay-webhook",
		Short: "Admission webhooks: validate relay secrets on apply, inject certificate volumes into agent pods",
		Long: `relay-webhook serves Kubernetes admission webhooks on every cluster. The validating
webhooks check each relay secret, Istio's cacerts, cert-manager Certificates that write a relay
secret, and KubernetesCluster names when they are applied (PEM, key match, CA chain to ca.crt
and to relay-root-tls-secret, usages, SANs, the cluster name, validity, DNS-1123 names) and
deny what is wrong with a one-line fix; a certificate inside its rotation window or a short
identity token is admitted with a warning. An update of relay-root-tls-secret or
relay-tls-signing-secret that would leave stored certificates without a valid chain is denied
unless the secret is annotated ` + meshv1alpha1.AllowChainBreakAnnotation + `=true. On the management
cluster (no --cluster), an update or a delete of relay-root-tls-secret that removes a root while
the live client certificate of a registered cluster still chains to it (the KubernetesClusters'
status.clientCertificate.rootSHA256) is denied, naming the clusters, unless the secret is annotated
` + meshv1alpha1.AllowRootRemovalAnnotation + `=true.

The mutating webhook injects the relay secrets as read-only volumes, the relay trust bundle and
the agent's settings (MESHRELAY_CLUSTER, MESHRELAY_SERVER_ADDRESS, MESHRELAY_AUTHORITY,
MESHRELAY_TRUST_BUNDLE_DIR) into agent pods. The trust bundle is a projected volume at
/etc/meshrelay/trust-bundle of relay-root-tls-secret's ca.crt and, where the cluster serves
ClusterTrustBundles (certificates.k8s.io/v1, checked at start and every few minutes), the relay
ClusterTrustBundle of the pod's namespace (signer ` + meshv1alpha1.TrustBundleSignerName + `).

The serving certificate is self-managed by default (--certificates=self): the webhook keeps a
CA and serving certificate in --certificate-secret, patches caBundle into its two webhook
configurations and rotates both before they expire. With --certificates=files it serves
tls.crt and tls.key from --cert-dir (cert-manager's secret, its CA injector sets caBundle).
relay_webhook_certificate_expiry_timestamp_seconds{certificate="serving"|"ca"} on the metrics
address says when the serving certificate and the CA that signed it expire.

Settings come from flags and from --config, a YAML file with the same names in camelCase; a
flag given on the command line wins over the file, and the file over MESHRELAY_CLUSTER,
MESHRELAY_SERVER_ADDRESS and MESHRELAY_AUTHORITY (a workload install sets these for the
webhook and the agent from one place).

The install manifests and the Helm chart run it as the Deployment relay-webhook in namespace
meshrelay-system of every cluster.`,
		Version: version.String(),
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := config.Load(cmd.Flags(), configFile, &cfg); err != nil {
				return err
			}
			if err := cfg.Validate(); err != nil {
				return fmt.Errorf("invalid relay-webhook settings: %w", err)
			}
			rest, err := kube.RESTConfig()
			if err != nil {
				return err
			}
			log := logs.Logger()
			s, err := webhook.New(webhook.Options{Config: cfg, RESTConfig: rest, Log: log, ServingIPs: servingIPs})
			if err != nil {
				return err
			}
			return s.Run(cmd.Context())
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&configFile, "config", "", "YAML or JSON settings file; flags given on the command line win over it")
	config.BindWebhook(fs, &cfg)
	fs.IPSliceVar(&servingIPs, "serving-ip", nil, "IP addresses the self-managed serving certificate also covers, for a webhook the API server calls by IP (outside a cluster, as make demo runs it)")
	kube.Bind(fs)
	logs.Bind(fs)
	return cmd
}
