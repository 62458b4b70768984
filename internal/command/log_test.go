package command

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"k8s.io/klog/v2"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
)

// lines returns the lines written to buf since the last call.
func lines(buf *bytes.Buffer) []string {
	out := strings.Split(strings.TrimSpace(buf.String()), "\n")
	buf.Reset()
	return out
}

func TestLoggerRoutesKlogAndControllerRuntimeThroughItself(t *testing.T) {
	t.Cleanup(klog.ClearLogger)
	var buf bytes.Buffer
	// The first logger made in this process: controller-runtime's logger
	// can be set only once.
	(&LogFlags{JSON: true}).loggerTo(&buf)

	for _, tc := range []struct {
		name    string
		log     func()
		wantMsg string
		wantKey string
		level   string
	}{
		{"client-go's structured klog line", func() { klog.InfoS("Starting reflector", "type", "*v1.Secret") }, "Starting reflector", "type", "INFO"},
		{"leader election's klog error", func() {
			klog.ErrorS(errors.New("lease conflict"), "error retrieving resource lock", "lock", "gloo-mesh/relay-server")
		}, "error retrieving resource lock", "lock", "ERROR"},
		{"a printf-style klog line", func() { klog.Infof("attempting to acquire leader lease %s...", "gloo-mesh/relay-server") }, "attempting to acquire leader lease gloo-mesh/relay-server...", "", "INFO"},
		{"controller-runtime's logger", func() { ctrllog.Log.WithName("controller").Info("Starting workers", "worker count", 1) }, "Starting workers", "worker count", "INFO"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.log()
			klog.Flush()
			got := lines(&buf)
			if len(got) != 1 {
				t.Fatalf("logged %d lines, want 1: %q", len(got), got)
			}
			var entry map[string]any
			if err := json.Unmarshal([]byte(got[0]), &entry); err != nil {
				t.Fatalf("line is not JSON (%v): %s", err, got[0])
			}
			if entry["msg"] != tc.wantMsg {
				t.Errorf("msg = %q, want %q in %s", entry["msg"], tc.wantMsg, got[0])
			}
			if entry["level"] != tc.level {
				t.Errorf("level = %q, want %q in %s", entry["level"], tc.level, got[0])
			}
			if _, ok := entry[tc.wantKey]; tc.wantKey != "" && !ok {
				t.Errorf("no key %q in %s", tc.wantKey, got[0])
			}
		})
	}

	t.Run("without --log-json klog lines come out as the same text", func(t *testing.T) {
		var text bytes.Buffer
		(&LogFlags{}).loggerTo(&text)
		klog.InfoS("Starting reflector", "type", "*v1.Secret")
		klog.Flush()
		got := lines(&text)
		if len(got) != 1 || !strings.Contains(got[0], `msg="Starting reflector"`) || !strings.Contains(got[0], `type=*v1.Secret`) {
			t.Errorf("logged %q, want one text line with msg and type", got)
		}
		if buf.Len() != 0 {
			t.Errorf("the JSON logger still got %q", buf.String())
		}
	})
}
