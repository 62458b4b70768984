package app

import "testing"

func TestAgentServesNoProfiles(t *testing.T) {
	if f := NewCommand().Flags().Lookup("enable-profiling"); f != nil {
		t.Errorf("relay-agent has --enable-profiling (default %s): its metrics address would serve profiles; agent.Run serves none", f.DefValue)
	}
}
