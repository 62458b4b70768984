package app

import (
	"bytes"
	"regexp"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// commands returns every command of relayctl's tree but the root, and
// cobra's own help and completion commands.
func commands(root *cobra.Command) []*cobra.Command {
	var all []*cobra.Command
	var walk func(*cobra.Command)
	walk = func(c *cobra.Command) {
		for _, sub := range c.Commands() {
			if sub.Name() == "help" || sub.Name() == "completion" {
				continue
			}
			all = append(all, sub)
			walk(sub)
		}
	}
	walk(root)
	return all
}

// help returns what `relayctl <path> --help` prints.
func help(t *testing.T, path ...string) string {
	t.Helper()
	code, out, stderr := runCLI(t, path[0], append(path[1:], "--help")...)
	if code != 0 {
		t.Fatalf("relayctl %s --help: exit %d: %s", strings.Join(path, " "), code, stderr)
	}
	return out
}

// devOnly matches what a user of a release cannot follow: development
// status and paths inside this repository.
var devOnly = regexp.MustCompile(`(?i)status: (works|every)|not built yet|README|\b(manifests|hack|docs|internal|cmd|reference)/|\.go\b|settings\.env`)

func TestEveryHelpIsForUsersAndStatesTheExitStatus(t *testing.T) {
	root := newCommandAs("relayctl")
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetArgs([]string{"--help"})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	texts := map[string]string{"relayctl": out.String()}
	for _, c := range commands(root) {
		path := strings.Fields(c.CommandPath())[1:]
		texts[strings.Join(path, " ")] = help(t, path...)
	}
	for name, text := range texts {
		if m := devOnly.FindString(text); m != "" {
			t.Errorf("%s --help shows %q, which only a developer of relayctl can follow:\n%s", name, m, text)
		}
		if name != "version" && !strings.Contains(text, "2 when") {
			t.Errorf("%s --help does not say what its exit statuses mean:\n%s", name, text)
		}
	}
}

func TestEveryCommandTakesKubectlsFlagsWithKubectlsMeaning(t *testing.T) {
	root := newCommandAs("relayctl")
	for _, c := range commands(root) {
		for name, wantShort := range map[string]string{"kubeconfig": "", "context": "", "namespace": "n", "request-timeout": "", "v": "v"} {
			f := c.Flag(name)
			if f == nil || f.Shorthand != wantShort {
				t.Errorf("%s: flag --%s = %+v, want it with shorthand %q", c.Name(), name, f, wantShort)
			}
		}
		if f := c.Flag("v"); f != nil && f.Value.Type() != "int" {
			t.Errorf("%s: -v is a %s, want the log verbosity (int), as in kubectl", c.Name(), f.Value.Type())
		}
		if f := c.Flag("dry-run"); f != nil && (f.Value.Type() != "string" || f.NoOptDefVal == "") {
			t.Errorf("%s: --dry-run is a %s without a bare form, want none|client|server and a bare --dry-run", c.Name(), f.Value.Type())
		}
		for _, old := range []string{"mgmt-context", "verbose"} {
			if f := c.LocalFlags().Lookup(old); f != nil && !f.Hidden {
				t.Errorf("%s: the old --%s is shown in --help: keep it hidden, as an alias", c.Name(), old)
			}
		}
	}
	for _, name := range []string{"register", "revoke", "restore", "rotate root", "rotate intermediate", "rotate server"} {
		if c, _, err := root.Find(strings.Fields(name)); err != nil || c.Flag("dry-run") == nil {
			t.Errorf("%s writes and has no --dry-run", name)
		}
	}
}

func TestOldFlagsStillParseAsTheirNewNames(t *testing.T) {
	for _, tc := range []struct {
		args []string
		flag string
		want string
	}{
		{[]string{"check", "--mgmt-context", "mgmt"}, "context", "mgmt"},
		{[]string{"register", "x", "--mgmt-context", "mgmt"}, "context", "mgmt"},
		{[]string{"revoke", "x", "--mgmt-context", "mgmt"}, "context", "mgmt"},
		{[]string{"check", "--verbose"}, "show-ok", "true"},
		{[]string{"check", "-v", "3"}, "v", "3"},
		{[]string{"check", "-v=4"}, "v", "4"},
		{[]string{"register", "x", "--dry-run"}, "dry-run", "client"},
		{[]string{"register", "x", "--dry-run=true"}, "dry-run", "client"},
		{[]string{"register", "x", "--dry-run=false"}, "dry-run", "none"},
		{[]string{"revoke", "x", "--dry-run=server"}, "dry-run", "server"},
		{[]string{"restore", "--dry-run", "--from", "d"}, "dry-run", "client"},
		{[]string{"backup", "-n", "relay", "--out", "d"}, "namespace", "relay"},
	} {
		root := newCommandAs("relayctl")
		c, rest, err := root.Find(tc.args)
		if err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		if err := c.ParseFlags(rest); err != nil {
			t.Errorf("%v: %v", tc.args, err)
			continue
		}
		if got := c.Flag(tc.flag).Value.String(); got != tc.want {
			t.Errorf("%v: --%s = %q, want %q", tc.args, tc.flag, got, tc.want)
		}
	}
}

func TestReportsCarryAPIVersionAndKindFirst(t *testing.T) {
	for _, tc := range []struct {
		name string
		v    any
		want string
	}{
		{"an object", struct {
			A int `json:"a"`
		}{1}, `{"apiVersion":"meshrelay.dev/v1alpha1","kind":"K","a":1}`},
		{"an empty object", struct{}{}, `{"apiVersion":"meshrelay.dev/v1alpha1","kind":"K"}`},
		{"a list becomes items", []int{1, 2}, `{"apiVersion":"meshrelay.dev/v1alpha1","kind":"K","items":[1,2]}`},
		{"no list is no items", []int(nil), `{"apiVersion":"meshrelay.dev/v1alpha1","kind":"K","items":[]}`},
	} {
		got, err := report("K", tc.v)
		if err != nil || string(got) != tc.want {
			t.Errorf("%s: %s, %v; want %s", tc.name, got, err, tc.want)
		}
	}
}
