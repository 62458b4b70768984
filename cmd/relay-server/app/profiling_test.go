package app

import "testing"

func TestProfilingIsOffByDefault(t *testing.T) {
	f := NewCommand().Flags().Lookup("enable-profiling")
	if f == nil {
		t.Fatal("relay-server has no --enable-profiling flag")
	}
	if f.DefValue != "false" {
		t.Errorf("--enable-profiling defaults to %s, want false: profiles are served on the metrics address, which has no authentication", f.DefValue)
	}
}
