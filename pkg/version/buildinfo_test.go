package version

import (
	"runtime"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestBuildInfoCarriesTheStampedVersionAndCommit(t *testing.T) {
	oldVersion, oldCommit := Version, Commit
	t.Cleanup(func() { Version, Commit = oldVersion, oldCommit })
	Version, Commit = "v1.2.3", "abc123"

	reg := prometheus.NewRegistry()
	reg.MustRegister(NewBuildInfo("relay_server"))
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if len(families) != 1 || families[0].GetName() != "relay_server_build_info" || len(families[0].GetMetric()) != 1 {
		t.Fatalf("gathered %v, want one relay_server_build_info sample", families)
	}
	m := families[0].GetMetric()[0]
	if v := m.GetGauge().GetValue(); v != 1 {
		t.Errorf("value = %v, want 1", v)
	}
	got := map[string]string{}
	for _, l := range m.GetLabel() {
		got[l.GetName()] = l.GetValue()
	}
	want := map[string]string{"version": "v1.2.3", "revision": "abc123", "goversion": runtime.Version()}
	if len(got) != len(want) {
		t.Errorf("labels = %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("label %s = %q, want %q", k, got[k], v)
		}
	}
}

func TestRevisionIsNeverEmpty(t *testing.T) {
	oldCommit := Commit
	t.Cleanup(func() { Commit = oldCommit })
	Commit = ""
	if r := Revision(); r == "" {
		t.Error("Revision() is empty in an unstamped build, want the VCS revision or \"unknown\"")
	}
	if s := String(); !strings.Contains(s, "commit "+Revision()) {
		t.Errorf("String() = %q, want it to name the commit %q", s, Revision())
	}
}
