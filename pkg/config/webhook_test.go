package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

func TestWebhookDefaultsValidateAndEveryProblemIsNamed(t *testing.T) {
	w := DefaultWebhook()
	if err := w.Validate(); err != nil {
		t.Fatalf("DefaultWebhook().Validate() = %v", err)
	}
	for _, tc := range []struct {
		name string
		edit func(*Webhook)
		want string
	}{
		{"a cluster name with an underscore is named as such", func(w *Webhook) { w.Cluster = "cluster_1" }, `cluster: Invalid value: "cluster_1": contains an underscore`},
		{"a server address without a port is refused", func(w *Webhook) { w.ServerAddress = "relay.example" }, "serverAddress: Invalid value"},
		{"a grace ratio of 1 is refused", func(w *Webhook) { w.ClientTLSSecretRotationGracePeriodRatio = 1 }, "clientTlsSecretRotationGracePeriodRatio"},
		{"an unknown certificate mode is refused with the choices", func(w *Webhook) { w.Certificates = "vault" }, `certificates: Unsupported value: "vault": supported values: "self", "files"`},
		{"files without a folder is refused with the fix", func(w *Webhook) { w.Certificates = CertificatesFiles }, "certDir: Required value: set it to the folder holding tls.crt and tls.key"},
		{"a client secret name that is not a subdomain is refused", func(w *Webhook) { w.ClientTLSSecret.Name = "Client" }, "clientTlsSecret.name"},
		{"an agent container that is not a label is refused", func(w *Webhook) { w.AgentContainer = "" }, "agentContainer"},
		{"a listen address without a port is refused", func(w *Webhook) { w.ListenAddress = "9443" }, "listenAddress"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := DefaultWebhook()
			tc.edit(&w)
			if err := w.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Validate() = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestWebhookFlagsWinOverTheFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "webhook.yaml")
	if err := os.WriteFile(path, []byte("cluster: from-file\nserverAddress: relay.example:9900\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	w := DefaultWebhook()
	fs := pflag.NewFlagSet("relay-webhook", pflag.ContinueOnError)
	BindWebhook(fs, &w)
	if err := fs.Parse([]string{"--cluster=from-flag"}); err != nil {
		t.Fatal(err)
	}
	if err := Load(fs, path, &w); err != nil {
		t.Fatal(err)
	}
	if w.Cluster != "from-flag" || w.ServerAddress != "relay.example:9900" {
		t.Errorf("cluster %q, server address %q: want the flag's cluster and the file's address", w.Cluster, w.ServerAddress)
	}
}
