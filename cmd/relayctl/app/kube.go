package app

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"

	"github.com/spf13/cobra"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/meshrelay/meshrelay/internal/command"
	"github.com/meshrelay/meshrelay/internal/scheme"
)

// clusterClients are the clients of one kubeconfig context.
type clusterClients struct {
	client.Client
	Clientset kubernetes.Interface
}

// connect returns the clients of context kubeContext in kubeconfig (both
// may be empty for the defaults).
func connect(kubeconfig, kubeContext string) (*clusterClients, error) {
	flags := command.KubeFlags{Kubeconfig: kubeconfig, Context: kubeContext}
	cfg, err := flags.RESTConfig()
	if err != nil {
		return nil, fmt.Errorf("context %q: %w", kubeContext, err)
	}
	scheme, err := scheme.Scheme()
	if err != nil {
		return nil, err
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, fmt.Errorf("context %q: failed to build a client: %w", kubeContext, err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("context %q: failed to build a client: %w", kubeContext, err)
	}
	return &clusterClients{Client: c, Clientset: cs}, nil
}

// outputFlag adds -o/--output to cmd.
func outputFlag(cmd *cobra.Command, into *string) {
	cmd.Flags().StringVarP(into, "output", "o", "", "output format: empty for people, json or yaml")
}

// checkOutputFormat refuses an unknown -o; commands call it before they
// read or write anything.
func checkOutputFormat(format string) error {
	switch format {
	case "", "json", "yaml":
		return nil
	}
	return fmt.Errorf("unknown output format %q: use json, yaml, or leave -o out", format)
}

// printResult writes v as JSON or YAML, or human() for people.
func printResult(w io.Writer, format string, v any, human func() string) error {
	if err := checkOutputFormat(format); err != nil {
		return err
	}
	switch format {
	case "":
		_, err := io.WriteString(w, human())
		return err
	case "json":
		data, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "%s\n", data)
		return err
	case "yaml":
		data, err := yaml.Marshal(v)
		if err != nil {
			return err
		}
		_, err = w.Write(data)
		return err
	}
	return nil
}

// completeContexts makes the named flags of cmd complete to the contexts
// of the kubeconfig that --kubeconfig (or $KUBECONFIG) names.
func completeContexts(cmd *cobra.Command, flags ...string) {
	complete := func(cmd *cobra.Command, _ []string, _ string) ([]string, cobra.ShellCompDirective) {
		rules := clientcmd.NewDefaultClientConfigLoadingRules()
		if f := cmd.Flags().Lookup("kubeconfig"); f != nil && f.Value.String() != "" {
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
