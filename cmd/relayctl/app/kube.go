package app

import (
	"fmt"
	"sort"

	"github.com/spf13/cobra"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meshrelay/meshrelay/internal/scheme"
)

// clusterClients are the clients of one kubeconfig context.
type clusterClients struct {
	client.Client
	Clientset kubernetes.Interface
}

// connect returns the clients of context kubeContext ("" for the current
// one) in --kubeconfig, every request bounded by --request-timeout.
func connect(g *globalFlags, kubeContext string) (*clusterClients, error) {
	cfg, err := g.restConfig(kubeContext)
	if err != nil {
		return nil, err
	}
	scheme, err := scheme.Scheme()
	if err != nil {
		return nil, err
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, fmt.Errorf("%s: failed to build a client: %w", describeContext(kubeContext), err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("%s: failed to build a client: %w", describeContext(kubeContext), err)
	}
	return &clusterClients{Client: c, Clientset: cs}, nil
}

// completeContexts makes the named flags of cmd complete to the contexts
// of the kubeconfig that --kubeconfig (or $KUBECONFIG) names.
func completeContexts(cmd *cobra.Command, flags ...string) {
	complete := func(cmd *cobra.Command, _ []string, _ string) ([]string, cobra.ShellCompDirective) {
		rules := clientcmd.NewDefaultClientConfigLoadingRules()
		if f := cmd.Flag("kubeconfig"); f != nil && f.Value.String() != "" {
			rules.ExplicitPath = f.Value.String()
		}
		cfg, err := rules.Load()
		if err != nil {
			return nil, cobra.ShellCompDirectiveError
		}
		var names []string
		for name := range cfg.Contexts {
			names = append(names, name)
		}
		sort.Strings(names)
		return names, cobra.ShellCompDirectiveNoFileComp
	}
	for _, f := range flags {
		_ = cmd.RegisterFlagCompletionFunc(f, complete)
	}
}
