package app

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshrelay/meshrelay/internal/command"
)

// TestUnknownOutputIsRefusedBeforeAnyClusterIsRead gives every command a
// kubeconfig that does not exist: the refusal must name the format, so it
// came before anything was read or written.
func TestUnknownOutputIsRefusedBeforeAnyClusterIsRead(t *testing.T) {
	none := filepath.Join(t.TempDir(), "none")
	for _, args := range [][]string{
		{"register", "cluster-1", "--kubeconfig", none, "--mgmt-context", "mgmt", "--remote-context", "cluster-1", "-o", "table"},
		{"check", "--kubeconfig", none, "--mgmt-context", "mgmt", "-o", "table"},
		{"backup", "--kubeconfig", none, "--context", "mgmt", "--out", t.TempDir(), "-o", "table"},
		{"validate", "-f", "-", "-o", "table"},
		{"rotate", "root", "--kubeconfig", none, "--context", "mgmt", "-o", "table"},
		{"rotate", "status", "--kubeconfig", none, "--context", "mgmt", "-o", "table"},
	} {
		var stderr bytes.Buffer
		cmd := NewCommand()
		cmd.SetIn(strings.NewReader(""))
		if code := command.Run(t.Context(), cmd, args, &stderr); code == 0 || !strings.Contains(stderr.String(), `unknown output format "table"`) {
			t.Errorf("%s: exit %d, stderr %q: want the format refused first", strings.Join(args[:2], " "), code, stderr.String())
		}
	}
}
