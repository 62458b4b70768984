package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshrelay/meshrelay/internal/command"
	"github.com/meshrelay/meshrelay/internal/relayctl/fleet"
	"github.com/meshrelay/meshrelay/pkg/config"
)

func newCheckCommand() *cobra.Command {
	var (
		kubeconfig, mgmtContext, namespace, authority, output string
		clientIssuerSecret                                    string
		remotes, metricsURLs                                  []string
		verbose                                               bool
	)
	cmd := &cobra.Command{
		Use:   "check --mgmt-context MGMT [--remote-context REMOTE[=NAME] ...]",
		Short: "Check that every cluster is registered and connected and every relay secret is consistent",
		Long: `check looks at the management cluster and each workload cluster and reports, per cluster,
whether it is registered and how many push and pull streams its agent holds on relay-server,
then every problem found, each with its fix in one line:

  - relay-root-tls-secret, relay-server-tls-secret (SANs cover --authority, key matches,
    chain verifies), relay-tls-signing-secret (chains to the root) on the management
    cluster, and a warning while the shared identity token (relay-identity-token-secret)
    exists there; the CAs relay-server admits client certificates from (its signing CA,
    and those of --client-issuer-secret);
  - on each workload cluster: relay-client-tls-secret (DNS name = registered name, key
    matches, chains to the relay root, issued by a CA relay-server admits), the same root
    as the management cluster, a KubernetesCluster for it, and its bootstrap token: the
    one issued for it, unused and unexpired, or not needed because the client certificate
    is valid; and a warning, saying what it allows, where the cluster holds the key of a
    CA under the relay root (relay-root-tls-secret with tls.key, istio-system/cacerts,
    the cert-manager overlays' relay-issuer-ca);
  - expiry and time left of every certificate, with a warning inside the last tenth of
    its lifetime;
  - on every cluster, that the validating webhook's caBundle verifies relay-webhook's
    serving certificate.

The stream counts come from relay-server's metrics, read through the API server's service
proxy (gloo-mesh-mgmt-server:9091) unless --server-metrics gives their URLs, one per
replica. A workload cluster's name is its client certificate's DNS name, or the context's
name; give it as REMOTE=NAME when they differ. The exit status is 1 when a problem is found.`,
		Example: `  relayctl check --mgmt-context mgmt --remote-context cluster-1 --remote-context cluster-2
  relayctl check --mgmt-context mgmt --remote-context kind-east=cluster-1 -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutputFormat(output); err != nil {
				return err
			}
			if mgmtContext == "" {
				return errors.New("--mgmt-context is required: the management cluster's kubeconfig context")
			}
			mgmt, err := connect(kubeconfig, mgmtContext)
			if err != nil {
				return err
			}
			srv, ag, wh := config.DefaultServer(), config.DefaultAgent(), config.DefaultWebhook()
			srv.Namespace, ag.Namespace, wh.Namespace = namespace, namespace, namespace
			srv.Authority, srv.ClientIssuerSecret = authority, clientIssuerSecret
			o := fleet.CheckOptions{Server: &srv, Agent: &ag, Webhook: &wh, Mgmt: mgmt, Now: time.Now()}
			for _, r := range remotes {
				kctx, name, _ := strings.Cut(r, "=")
				c, err := connect(kubeconfig, kctx)
				if err != nil {
					return err
				}
				o.Remotes = append(o.Remotes, fleet.Remote{Context: kctx, Name: name, Client: c})
			}
			o.Metrics = func(ctx context.Context) ([][]byte, error) {
				if len(metricsURLs) > 0 {
					return fetchAll(ctx, metricsURLs)
				}
				data, err := mgmt.Clientset.CoreV1().Services(namespace).ProxyGet("http", "gloo-mesh-mgmt-server", "9091", "metrics", nil).DoRaw(ctx)
				if err != nil {
					return nil, fmt.Errorf("failed to read relay-server metrics through the API server's proxy: %w", err)
				}
				return [][]byte{data}, nil
			}
			report, err := fleet.Check(cmd.Context(), o)
			if err != nil {
				return err
			}
			if err := printResult(cmd.OutOrStdout(), output, report, func() string { return report.Text(verbose) }); err != nil {
				return err
			}
			if n := report.Problems(); n > 0 {
				return &command.ExitError{Code: 1, Err: fmt.Errorf("%d problem(s) found", n)}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&kubeconfig, "kubeconfig", "", "path of the kubeconfig holding every context; empty means $KUBECONFIG, then ~/.kube/config")
	f.StringVar(&mgmtContext, "mgmt-context", "", "kubeconfig context of the management cluster")
	f.StringArrayVar(&remotes, "remote-context", nil, "kubeconfig context of a workload cluster, as CONTEXT or CONTEXT=NAME; repeat for each")
	f.StringArrayVar(&metricsURLs, "server-metrics", nil, "URL of a relay-server replica's /metrics; repeat for each replica (default: through the API server's service proxy)")
	f.StringVar(&namespace, "namespace", config.DefaultNamespace, "namespace of the relay secrets and KubernetesClusters")
	f.StringVar(&authority, "authority", config.DefaultAuthority, "SNI name agents dial; the server certificate must cover it")
	f.StringVar(&clientIssuerSecret, "client-issuer-secret", "", "the clientIssuerSecret relay-server runs with, if any: its CAs are judged and client certificates from them admitted")
	f.BoolVarP(&verbose, "verbose", "v", false, "also list what is fine")
	outputFlag(cmd, &output)
	completeContexts(cmd, "mgmt-context", "remote-context")
	return cmd
}

// fetchAll GETs every URL and returns the bodies.
func fetchAll(ctx context.Context, urls []string) ([][]byte, error) {
	var out [][]byte
	hc := &http.Client{Timeout: 10 * time.Second}
	for _, u := range urls {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return nil, fmt.Errorf("--server-metrics %q: %w", u, err)
		}
		resp, err := hc.Do(req)
		if err != nil {
			return nil, fmt.Errorf("failed to read relay-server metrics: %w", err)
		}
		body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
		resp.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("failed to read relay-server metrics from %s: %w", u, err)
		}
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("relay-server metrics at %s answered %s", u, resp.Status)
		}
		out = append(out, body)
	}
	return out, nil
}
