package app

import (
	"bytes"
	"strings"
	"testing"
)

// TestGenWarnsOnStderrWhereAWorkloadClusterHoldsACAKeyUnderTheRelayRoot:
// relayctl gen says what single's and two-intermediates' mesh CA key
// allows, on stderr, so that the YAML on stdout still applies as it is.
func TestGenWarnsOnStderrWhereAWorkloadClusterHoldsACAKeyUnderTheRelayRoot(t *testing.T) {
	for arch, want := range map[string]string{
		"single":            "issuer pinning cannot refuse them",
		"two-intermediates": "relay-server refuses the client certificates it issues",
		"separate-roots":    "",
	} {
		t.Run(arch, func(t *testing.T) {
			cmd := newCommandAs("relayctl")
			var out, errOut bytes.Buffer
			cmd.SetArgs([]string{"gen", "--architecture", arch, "--clusters", "cluster-1"})
			cmd.SetOut(&out)
			cmd.SetErr(&errOut)
			if err := cmd.ExecuteContext(t.Context()); err != nil {
				t.Fatal(err)
			}
			if strings.Contains(out.String(), "WARNING") {
				t.Error("the warning went to stdout, into the YAML stream")
			}
			switch {
			case want == "" && errOut.Len() > 0:
				t.Errorf("stderr %q, want nothing", errOut.String())
			case want != "" && (!strings.HasPrefix(errOut.String(), "WARNING: istio-system/cacerts on workload cluster cluster-1 holds the private key of") || !strings.Contains(errOut.String(), want)):
				t.Errorf("stderr %q, want a WARNING saying %q", errOut.String(), want)
			}
		})
	}
}
