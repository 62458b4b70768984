package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshrelay/meshrelay/internal/relayctl/fleet"
	"github.com/meshrelay/meshrelay/pkg/config"
)

func newCheckCommand(g *globalFlags) *cobra.Command {
	var (
		authority, output    string
		clientIssuerSecret   string
		streamsFrom          string
		remotes, metricsURLs []string
		showOK               bool
	)
	cmd := &cobra.Command{
		Use:   "check [--context MGMT] [--remote-context REMOTE[=NAME] ...]",
		Short: "Check that every cluster is registered and connected and every relay secret is consistent",
		Long: `check looks at the management cluster (--context) and each workload cluster
(--remote-context) and prints a table of the workload clusters: whether each is registered,
how many push and pull streams its agent holds on which relay-server replicas, and until when
its client certificate is valid; then every problem found, each with its fix in one line
(--show-ok lists what is fine too):

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

Where the streams come from (--streams-from):

  - status (the default): each KubernetesCluster's status, where every relay-server
    replica writes how many streams of the cluster it holds and the leader writes the
    Connected condition. An entry counts only while its replica renews its Lease
    (relay-server-replica-<replica>); a cluster is connected when a live replica holds
    both a push and a pull stream. Otherwise check reports why: the condition's message,
    or that the status is missing or its replicas have stopped.
  - metrics: relay-server's /metrics of every replica, summed per cluster: the pods
    behind the Service gloo-mesh-mgmt-server (its selector), each read through the API
    server's pod proxy on the container port named metrics (else 9091), or the URLs
    --server-metrics gives, one per replica (it implies --streams-from=metrics).

A workload cluster's name is its client certificate's DNS name, or the context's name;
give it as REMOTE=NAME when they differ. Each request to a cluster waits at most
--request-timeout; a cluster that does not answer makes check fail with status 2.

` + exitCodesHelp + `

Flags named before --context (--mgmt-context) and before --show-ok (--verbose) still work.`,
		Example: `  relayctl check --context mgmt --remote-context cluster-1 --remote-context cluster-2
  relayctl check --context mgmt --remote-context kind-east=cluster-1 -o json
  relayctl check --context mgmt --remote-context cluster-1 --streams-from=metrics --request-timeout 10s`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutputFormat(output); err != nil {
				return err
			}
			from, err := streamsSource(streamsFrom, metricsURLs)
			if err != nil {
				return usageError(err)
			}
			timeout, err := g.timeout()
			if err != nil {
				return err
			}
			mgmt, err := connect(g, g.context)
			if err != nil {
				return err
			}
			srv, ag, wh := config.DefaultServer(), config.DefaultAgent(), config.DefaultWebhook()
			srv.Namespace, ag.Namespace, wh.Namespace = g.namespace, g.namespace, g.namespace
			srv.Authority, srv.ClientIssuerSecret = authority, clientIssuerSecret
			o := fleet.CheckOptions{Server: &srv, Agent: &ag, Webhook: &wh, Mgmt: mgmt, StreamsFrom: from, Now: time.Now()}
			for _, r := range remotes {
				kctx, name, _ := strings.Cut(r, "=")
				c, err := connect(g, kctx)
				if err != nil {
					return err
				}
				o.Remotes = append(o.Remotes, fleet.Remote{Context: kctx, Name: name, Client: c})
			}
			switch {
			case len(metricsURLs) > 0:
				o.Metrics = func(ctx context.Context) ([]fleet.MetricsPage, error) {
					return fetchAll(ctx, metricsURLs, timeout), nil
				}
			case from == fleet.StreamsFromMetrics:
				o.Metrics = fleet.PodMetrics(fleet.PodMetricsOptions{Client: mgmt, Namespace: g.namespace, Service: serverService, Fetch: fleet.ProxyFetch(mgmt.Clientset)})
			}
			report, err := fleet.Check(cmd.Context(), o)
			if err != nil {
				return err
			}
			if err := printResult(cmd.OutOrStdout(), output, kindCheck, report, func() string { return report.Text(showOK) }); err != nil {
				return err
			}
			if n := report.Problems(); n > 0 {
				return problemsFound(fmt.Errorf("%d problem(s) found", n))
			}
			return nil
		},
	}
	f := cmd.Flags()
	deprecatedAlias(cmd, "mgmt-context", "context", &g.context)
	f.StringArrayVar(&remotes, "remote-context", nil, "kubeconfig context of a workload cluster, as CONTEXT or CONTEXT=NAME; repeat for each")
	f.StringVar(&streamsFrom, "streams-from", "", "where stream counts come from: status (KubernetesCluster status; the default) or metrics (every relay-server pod's /metrics, summed; the default with --server-metrics)")
	f.StringArrayVar(&metricsURLs, "server-metrics", nil, "URL of a relay-server replica's /metrics, read instead of the pods' through the API server; repeat for each replica (implies --streams-from=metrics)")
	f.StringVar(&authority, "authority", config.DefaultAuthority, "SNI name agents dial; the server certificate must cover it")
	f.StringVar(&clientIssuerSecret, "client-issuer-secret", "", "the clientIssuerSecret relay-server runs with, if any: its CAs are judged and client certificates from them admitted")
	f.BoolVar(&showOK, "show-ok", false, "also list the checks that found nothing wrong")
	f.BoolVar(&showOK, "verbose", false, "deprecated: use --show-ok")
	markDeprecated(cmd, "verbose", "use --show-ok instead (-v is the log verbosity, as in kubectl)")
	outputFlag(cmd, &output)
	completeContexts(cmd, "mgmt-context", "remote-context")
	return cmd
}

// serverService is relay-server's Service, whose selector finds its pods.
const serverService = "gloo-mesh-mgmt-server"

// streamsSource is where check reads streams from: --streams-from, else
// metrics when --server-metrics gives URLs, else status.
func streamsSource(from string, metricsURLs []string) (string, error) {
	switch from {
	case "":
		if len(metricsURLs) > 0 {
			return fleet.StreamsFromMetrics, nil
		}
		return fleet.StreamsFromStatus, nil
	case fleet.StreamsFromStatus:
		if len(metricsURLs) > 0 {
			return "", errors.New("--server-metrics reads streams from metrics: leave --streams-from=status out, or set it to metrics")
		}
		return from, nil
	case fleet.StreamsFromMetrics:
		return from, nil
	}
	return "", fmt.Errorf("unknown --streams-from %q: use status (KubernetesCluster status) or metrics (relay-server's /metrics)", from)
}

// fetchAll GETs every URL, each page with its body or its error.
// Each read waits at most timeout, or 10 seconds when it is 0.
func fetchAll(ctx context.Context, urls []string, timeout time.Duration) []fleet.MetricsPage {
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	hc := &http.Client{Timeout: timeout}
	pages := make([]fleet.MetricsPage, 0, len(urls))
	for _, u := range urls {
		body, err := fetch(ctx, hc, u)
		pages = append(pages, fleet.MetricsPage{Replica: u, Data: body, Err: err})
	}
	return pages
}

func fetch(ctx context.Context, hc *http.Client, u string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("--server-metrics %q: %w", u, err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		// The page is reported under its URL: keep the URL out of the error.
		if ue, ok := errors.AsType[*url.Error](err); ok {
			err = ue.Err
		}
		return nil, fmt.Errorf("failed to read relay-server metrics: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("failed to read relay-server metrics: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("relay-server metrics answered %s", resp.Status)
	}
	return body, nil
}
