package app

import (
	"flag"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"github.com/meshrelay/meshrelay/internal/command"
	"github.com/meshrelay/meshrelay/pkg/config"
)

// globalFlags are the flags every relayctl command takes, named and read as
// kubectl's: --kubeconfig, --context (the management cluster), -n, and
// --request-timeout; -v is the log verbosity.
type globalFlags struct {
	kubeconfig     string
	context        string
	namespace      string
	requestTimeout string
	log            command.LogFlags
}

func (g *globalFlags) bind(fs *pflag.FlagSet) {
	fs.StringVar(&g.kubeconfig, "kubeconfig", "", "path of the kubeconfig holding every context; empty means $KUBECONFIG, then ~/.kube/config")
	fs.StringVar(&g.context, "context", "", "kubeconfig context of the management cluster; empty means the kubeconfig's current context")
	fs.StringVarP(&g.namespace, "namespace", "n", config.DefaultNamespace, "namespace of the relay secrets and KubernetesClusters, on every cluster")
	fs.StringVar(&g.requestTimeout, "request-timeout", "0", `how long to wait for each request to a cluster (API call or proxied read) before giving up, as 30s, 1m or 2h; "0" waits forever`)
	g.log.Bind(fs)
	fs.Lookup("v").Usage = "log verbosity, as in kubectl: 0 logs only problems, 6 and above every request to a cluster"
}

// startLogging logs to stderr at -v, client-go's klog lines included.
func (g *globalFlags) startLogging() {
	g.log.Logger()
	// klog checks its own verbosity before it hands a line to the logger.
	var fs flag.FlagSet
	klog.InitFlags(&fs)
	_ = fs.Set("v", strconv.Itoa(g.log.Verbosity))
}

// timeout parses --request-timeout as kubectl does: a duration with a
// unit, or a whole number of seconds.
func (g *globalFlags) timeout() (time.Duration, error) {
	d, err := parseRequestTimeout(g.requestTimeout)
	if err != nil {
		return 0, usageError(err)
	}
	return d, nil
}

func parseRequestTimeout(s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	// clientcmd parses it for kubectl: the same format.
	d, err := clientcmd.ParseTimeout(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("invalid --request-timeout %q: give a duration with its unit (30s, 1m, 2h) or 0 for none", s)
	}
	return d, nil
}

// restConfig loads the client configuration of kubeContext ("" for the
// current one) with --request-timeout applied to every request.
func (g *globalFlags) restConfig(kubeContext string) (*rest.Config, error) {
	timeout, err := g.timeout()
	if err != nil {
		return nil, err
	}
	cfg, err := g.clientConfig(kubeContext).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("failed to load the kubeconfig for %s: %w", describeContext(kubeContext), err)
	}
	cfg.Timeout = timeout
	return cfg, nil
}

func (g *globalFlags) clientConfig(kubeContext string) clientcmd.ClientConfig {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if g.kubeconfig != "" {
		rules.ExplicitPath = g.kubeconfig
	}
	return clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: kubeContext})
}

// contextName is kubeContext, or the name of the kubeconfig's current
// context when it is empty, for what relayctl prints.
func (g *globalFlags) contextName(kubeContext string) string {
	if kubeContext != "" {
		return kubeContext
	}
	raw, err := g.clientConfig("").RawConfig()
	if err != nil || raw.CurrentContext == "" {
		return "(current context)"
	}
	return raw.CurrentContext
}

func describeContext(kubeContext string) string {
	if kubeContext == "" {
		return "the current context"
	}
	return fmt.Sprintf("context %q", kubeContext)
}

// deprecatedAnnotation marks a hidden flag kept for an old spelling; its
// value is the note printed, on stderr, when it is used.
const deprecatedAnnotation = "relayctl.meshrelay.dev/deprecated"

// deprecatedAlias adds flag name to cmd, hidden, as an old spelling of
// target: both set into. Using it prints that target replaces it.
func deprecatedAlias(cmd *cobra.Command, name, target string, into *string) {
	cmd.Flags().StringVar(into, name, *into, "deprecated: use --"+target)
	markDeprecated(cmd, name, "use --"+target+" instead")
}

// markDeprecated hides flag name of cmd and notes note when it is used.
// pflag's own deprecation note goes to stdout, where it would break
// -o json: warnDeprecated writes it to stderr.
func markDeprecated(cmd *cobra.Command, name, note string) {
	fs := cmd.Flags()
	if err := fs.MarkHidden(name); err != nil {
		panic(err)
	}
	if err := fs.SetAnnotation(name, deprecatedAnnotation, []string{note}); err != nil {
		panic(err)
	}
}

// warnDeprecated notes on w every deprecated flag given to cmd.
func warnDeprecated(cmd *cobra.Command, w io.Writer) {
	cmd.Flags().Visit(func(f *pflag.Flag) {
		if note := f.Annotations[deprecatedAnnotation]; len(note) > 0 {
			fmt.Fprintf(w, "Flag --%s has been deprecated, %s\n", f.Name, note[0])
		}
	})
}
