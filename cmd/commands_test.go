// Package cmd_test checks that every binary's command builds and prints
// help named after itself.
package cmd_test

import (
	"bytes"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	agent "github.com/meshrelay/meshrelay/cmd/relay-agent/app"
	server "github.com/meshrelay/meshrelay/cmd/relay-server/app"
	webhook "github.com/meshrelay/meshrelay/cmd/relay-webhook/app"
	relayctl "github.com/meshrelay/meshrelay/cmd/relayctl/app"
	"github.com/meshrelay/meshrelay/internal/command"
	"github.com/meshrelay/meshrelay/pkg/version"
)

var commands = map[string]func() *cobra.Command{
	"relay-server":  server.NewCommand,
	"relay-agent":   agent.NewCommand,
	"relay-webhook": webhook.NewCommand,
	"relayctl":      relayctl.NewCommand,
}

func TestEveryBinaryPrintsHelpNamedAfterItself(t *testing.T) {
	for name, newCmd := range commands {
		t.Run(name, func(t *testing.T) {
			cmd := newCmd()
			var out, stderr bytes.Buffer
			cmd.SetOut(&out)
			if code := command.Run(t.Context(), cmd, []string{"--help"}, &stderr); code != 0 {
				t.Fatalf("%s --help exited %d: %s", name, code, stderr.String())
			}
			if !strings.HasPrefix(out.String(), name+" ") || !strings.Contains(out.String(), "Usage:") {
				t.Errorf("%s --help does not start with its name and show usage:\n%s", name, out.String())
			}
		})
	}
}

func TestRelayWebhookRefusesBadSettingsWithTheFix(t *testing.T) {
	var stderr bytes.Buffer
	code := command.Run(t.Context(), commands["relay-webhook"](), []string{"--cluster=cluster_1", "--certificates=vault"}, &stderr)
	if code == 0 {
		t.Fatal("relay-webhook with bad settings exited 0")
	}
	for _, want := range []string{`cluster: Invalid value: "cluster_1": contains an underscore`, `use "cluster-1"`, `certificates: Unsupported value: "vault"`} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr %q does not contain %q", stderr.String(), want)
		}
	}
}

func TestRelayctlVersionPrintsTheBuildVersion(t *testing.T) {
	cmd := relayctl.NewCommand()
	var out, stderr bytes.Buffer
	cmd.SetOut(&out)
	if code := command.Run(t.Context(), cmd, []string{"version"}, &stderr); code != 0 {
		t.Fatalf("relayctl version exited %d: %s", code, stderr.String())
	}
	if want := "relayctl " + version.String() + "\n"; out.String() != want {
		t.Errorf("relayctl version printed %q, want %q", out.String(), want)
	}
}

func TestRelayServerRefusesBadSettingsBeforeStarting(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"a TTL under a minute is named", []string{"--client-certificate-ttl=1s"}, "clientCertificateTTL: Invalid value"},
		{"an authority with an underscore is named", []string{"--authority=mgmt_server.gloo-mesh"}, "contains an underscore"},
		{"a missing config file is named", []string{"--config=/nonexistent/relay.yaml"}, "failed to open config file"},
		{"no reachable cluster is named", []string{"--kubeconfig=/nonexistent/kubeconfig"}, "failed to load Kubernetes client configuration"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stderr bytes.Buffer
			if code := command.Run(t.Context(), server.NewCommand(), tc.args, &stderr); code != 1 {
				t.Errorf("exit %d, want 1", code)
			}
			if !strings.Contains(stderr.String(), tc.want) {
				t.Errorf("stderr %q does not contain %q", stderr.String(), tc.want)
			}
		})
	}
}

func TestRelayAgentRefusesBadSettingsBeforeStarting(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"a missing cluster name is named with its flag", []string{"--server-address=relay:9900"}, "cluster: Required value: set it to this workload cluster's registered name (--cluster)"},
		{"a missing server address is named", []string{"--cluster=cluster-1"}, "serverAddress: Required value"},
		{"a grace ratio above 1 is named", []string{"--cluster=c", "--server-address=r:1", "--client-tls-secret-rotation-grace-period-ratio=2"}, "must be between 0 and 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stderr bytes.Buffer
			if code := command.Run(t.Context(), agent.NewCommand(), tc.args, &stderr); code != 1 {
				t.Errorf("exit %d, want 1", code)
			}
			if !strings.Contains(stderr.String(), tc.want) {
				t.Errorf("stderr %q does not contain %q", stderr.String(), tc.want)
			}
		})
	}
}
