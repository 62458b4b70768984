package command

import (
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/go-logr/logr"
	"github.com/spf13/pflag"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
)

// KubeFlags are the --kubeconfig and --context flags of a component that
// runs in a cluster: inside a pod both stay empty and the in-cluster
// configuration is used.
type KubeFlags struct {
	Kubeconfig string
	Context    string
}

// Bind adds the flags to fs.
func (k *KubeFlags) Bind(fs *pflag.FlagSet) {
	fs.StringVar(&k.Kubeconfig, "kubeconfig", "", "path of a kubeconfig; empty means $KUBECONFIG, then in-cluster, then ~/.kube/config")
	fs.StringVar(&k.Context, "context", "", "kubeconfig context to use; empty means its current context")
}

// RESTConfig loads the client configuration the flags select.
func (k *KubeFlags) RESTConfig() (*rest.Config, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if k.Kubeconfig != "" {
		rules.ExplicitPath = k.Kubeconfig
	}
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: k.Context}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("failed to load Kubernetes client configuration: %w", err)
	}
	return cfg, nil
}

// LogFlags choose the log verbosity and format.
type LogFlags struct {
	Verbosity int
	JSON      bool
}

// Bind adds the flags to fs.
func (l *LogFlags) Bind(fs *pflag.FlagSet) {
	fs.IntVarP(&l.Verbosity, "v", "v", 0, "log verbosity: 0 for changes and problems, 1 for every stream and call")
	fs.BoolVar(&l.JSON, "log-json", false, "log JSON lines instead of text")
}

// Logger returns a logger writing to stderr, and makes it the logger of
// klog (client-go and leader election log through it) and of
// controller-runtime, so that every line a binary prints has one format:
// JSON with --log-json.
func (l *LogFlags) Logger() logr.Logger { return l.loggerTo(os.Stderr) }

func (l *LogFlags) loggerTo(w io.Writer) logr.Logger {
	opts := &slog.HandlerOptions{Level: slog.Level(-l.Verbosity)}
	var h slog.Handler = slog.NewTextHandler(w, opts)
	if l.JSON {
		h = slog.NewJSONHandler(w, opts)
	}
	log := logr.FromSlogHandler(h)
	klog.SetLogger(log)
	ctrllog.SetLogger(log)
	return log
}
