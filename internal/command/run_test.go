package command

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

func TestRunMapsErrorsToExitStatus(t *testing.T) {
	for _, tc := range []struct {
		name       string
		run        func(*cobra.Command, []string) error
		args       []string
		wantCode   int
		wantStderr string
	}{
		{"a command that succeeds exits 0 and prints nothing", func(*cobra.Command, []string) error { return nil }, nil, 0, ""},
		{"a plain error exits 1 with its message", func(*cobra.Command, []string) error { return errors.New("failed to read secret") }, nil, 1, "Error: failed to read secret\n"},
		{"an ExitError exits with its code", func(*cobra.Command, []string) error {
			return &ExitError{Code: 3, Err: errors.New("check found 2 problems")}
		}, nil, 3, "Error: check found 2 problems\n"},
		{"a capability not built yet exits 2 and points at the README", func(*cobra.Command, []string) error { return NotYetBuilt("relay-agent") }, nil, 2, "relay-agent is not built yet"},
		{"an unknown flag exits 1 naming the flag", func(*cobra.Command, []string) error { return nil }, []string{"--bogus"}, 1, "unknown flag: --bogus"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := &cobra.Command{Use: "x", RunE: tc.run}
			var stderr bytes.Buffer
			code := Run(t.Context(), cmd, tc.args, &stderr)
			if code != tc.wantCode {
				t.Errorf("exit status = %d, want %d", code, tc.wantCode)
			}
			if tc.wantStderr == "" && stderr.Len() != 0 {
				t.Errorf("stderr = %q, want nothing", stderr.String())
			}
			if !strings.Contains(stderr.String(), tc.wantStderr) {
				t.Errorf("stderr = %q, want it to contain %q", stderr.String(), tc.wantStderr)
			}
			if strings.Contains(stderr.String(), "Usage:") {
				t.Errorf("stderr repeats the usage text after an error: %q", stderr.String())
			}
		})
	}
}

func TestExitErrorUnwrapsToItsCause(t *testing.T) {
	cause := errors.New("cause")
	if err := error(&ExitError{Code: 4, Err: cause}); !errors.Is(err, cause) {
		t.Errorf("errors.Is(ExitError, cause) = false")
	}
}

func TestRunPrintsTheErrorAsJSONWithLogJSON(t *testing.T) {
	for _, tc := range []struct {
		name     string
		args     []string
		wantJSON bool
	}{
		{"with --log-json the last line is a JSON log entry too", []string{"--log-json"}, true},
		{"without it the error is the usual text", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := &cobra.Command{Use: "x", RunE: func(*cobra.Command, []string) error {
				return errors.New("failed to create manager: no route to host")
			}}
			(&LogFlags{}).Bind(cmd.Flags())
			var stderr bytes.Buffer
			if code := Run(t.Context(), cmd, tc.args, &stderr); code != 1 {
				t.Errorf("exit status = %d, want 1", code)
			}
			var entry map[string]any
			err := json.Unmarshal(stderr.Bytes(), &entry)
			switch {
			case tc.wantJSON && (err != nil || entry["level"] != "ERROR" || entry["error"] != "failed to create manager: no route to host"):
				t.Errorf("stderr = %q, want one JSON line at level ERROR with the error", stderr.String())
			case !tc.wantJSON && stderr.String() != "Error: failed to create manager: no route to host\n":
				t.Errorf("stderr = %q, want the text error", stderr.String())
			}
		})
	}
}
