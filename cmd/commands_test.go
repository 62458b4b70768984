// Package cmd_test checks that every binary's command builds, prints honest
// help, and says so when its capability has not landed yet.
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
	"github.com/meshrelay/meshrelay/pkg/cli"
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
			if code := cli.Run(t.Context(), cmd, []string{"--help"}, &stderr); code != 0 {
				t.Fatalf("%s --help exited %d: %s", name, code, stderr.String())
			}
			if !strings.HasPrefix(out.String(), name+" ") || !strings.Contains(out.String(), "Usage:") {
				t.Errorf("%s --help does not start with its name and show usage:\n%s", name, out.String())
			}
			if !strings.Contains(out.String(), "Status:") {
				t.Errorf("%s --help does not say what works in this build", name)
			}
		})
	}
}

func TestBinariesWhoseCapabilityHasNotLandedExitTwo(t *testing.T) {
	for _, name := range []string{"relay-server", "relay-agent", "relay-webhook"} {
		t.Run(name, func(t *testing.T) {
			var stderr bytes.Buffer
			if code := cli.Run(t.Context(), commands[name](), nil, &stderr); code != 2 {
				t.Errorf("%s exited %d, want 2 (not built yet)", name, code)
			}
			if !strings.Contains(stderr.String(), name+" is not built yet") {
				t.Errorf("%s stderr = %q, want it to say it is not built yet", name, stderr.String())
			}
		})
	}
}

func TestRelayctlVersionPrintsTheBuildVersion(t *testing.T) {
	cmd := relayctl.NewCommand()
	var out, stderr bytes.Buffer
	cmd.SetOut(&out)
	if code := cli.Run(t.Context(), cmd, []string{"version"}, &stderr); code != 0 {
		t.Fatalf("relayctl version exited %d: %s", code, stderr.String())
	}
	if want := "relayctl " + version.String() + "\n"; out.String() != want {
		t.Errorf("relayctl version printed %q, want %q", out.String(), want)
	}
}
