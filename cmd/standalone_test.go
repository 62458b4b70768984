package cmd_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/meshrelay/meshrelay/internal/command"
)

// outsideCitation matches what only makes sense to someone holding material
// that is not in this repository: a path to a folder beside the checkout, or
// a document or procedure cited by number instead of said in words. Written
// so that this file does not match itself.
var outsideCitation = regexp.MustCompile(`(?i)\.\./shared|reference[ ]00|flow [0-9]`)

// repositoryFiles returns the root of the checkout and the files git tracks
// in it. The test runs from cmd/, inside the checkout, so git must find it.
func repositoryFiles(t *testing.T) (string, []string) {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Fatalf("git is needed to list the repository's files: install git and run the test from a clone: %v", err)
	}
	top, err := exec.Command("git", "rev-parse", "--show-toplevel").Output()
	if err != nil {
		t.Fatalf("failed to find the repository root with git rev-parse (run the test from a clone): %v", err)
	}
	root := strings.TrimSpace(string(top))
	out, err := exec.Command("git", "-C", root, "ls-files", "-z").Output()
	if err != nil {
		t.Fatalf("failed to list tracked files with git ls-files: %v", err)
	}
	var files []string
	for f := range strings.SplitSeq(strings.TrimRight(string(out), "\x00"), "\x00") {
		if f != "" {
			files = append(files, f)
		}
	}
	if len(files) < 50 {
		t.Fatalf("git ls-files listed %d files in %s, too few for this repository: is this a full clone?", len(files), root)
	}
	return root, files
}

func TestNoTrackedFileCitesMaterialOutsideTheRepository(t *testing.T) {
	root, files := repositoryFiles(t)
	read := 0
	for _, f := range files {
		data, err := os.ReadFile(filepath.Join(root, f))
		if os.IsNotExist(err) {
			continue // deleted in the working tree, not yet committed
		}
		if err != nil {
			t.Fatalf("failed to read tracked file %s: %v", f, err)
		}
		read++
		if bytes.IndexByte(data, 0) >= 0 {
			continue // binary
		}
		for i, line := range strings.Split(string(data), "\n") {
			if m := outsideCitation.FindString(line); m != "" {
				t.Errorf("%s:%d cites %q, which a reader of this repository cannot follow: say what the document, flow or procedure is in words (or link a public page by title): %s",
					f, i+1, m, strings.TrimSpace(line))
			}
		}
	}
	if read == 0 {
		t.Fatal("read no tracked file: the check proved nothing")
	}
}

func TestOutsideCitationPatternCatchesEachForm(t *testing.T) {
	// The citations are split in two so that this file does not cite them.
	for _, tc := range []struct {
		line  string
		match bool
	}{
		{"see ../" + "shared/reference/README.md", true},
		{"the Vault Issuer of Reference " + "004", true},
		{"runs Flow " + "6 with the real binaries", true},
		{"the bring-your-own PKI setup of docs/cert-manager.md", false},
		{"the control flow of the rotator", false},
		{"a reference to the issuer", false},
	} {
		if got := outsideCitation.MatchString(tc.line); got != tc.match {
			t.Errorf("pattern on %q matched %v, want %v", tc.line, got, tc.match)
		}
	}
}

// developmentWording is what a binary's help must not show a user: the state
// of the build, or a path inside this repository.
var developmentWording = regexp.MustCompile(`Status:|manifests/|hack/|internal/|\.\./`)

func TestHelpShowsNoBuildStatusOrRepositoryPaths(t *testing.T) {
	for name, newCmd := range commands {
		root := newCmd()
		var walk func(c *cobra.Command)
		walk = func(c *cobra.Command) {
			path := c.CommandPath()
			args := append(strings.Fields(path)[1:], "--help")
			t.Run(path, func(t *testing.T) {
				cmd := newCmd()
				var out, stderr bytes.Buffer
				cmd.SetOut(&out)
				if code := command.Run(t.Context(), cmd, args, &stderr); code != 0 {
					t.Fatalf("%s --help exited %d: %s", path, code, stderr.String())
				}
				if out.Len() == 0 {
					t.Fatalf("%s --help printed nothing", path)
				}
				for i, line := range strings.Split(out.String(), "\n") {
					if m := developmentWording.FindString(line); m != "" {
						t.Errorf("%s --help line %d shows %q, which is about this repository, not about using %s: %s",
							path, i+1, m, name, strings.TrimSpace(line))
					}
				}
			})
			for _, sub := range c.Commands() {
				if sub.Hidden || sub.Name() == "help" {
					continue
				}
				walk(sub)
			}
		}
		walk(root)
	}
}
