// Package version reports the build's version, set by the linker at build time
// (see the Makefile's LDFLAGS), so that every binary and relayctl agree on it.
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Version is the release version, for example "v0.1.0"; "dev" in an unstamped build.
var Version = "dev"

// Commit is the git commit the binary was built from, when the build stamped it.
var Commit = ""

// String returns a one-line description: version, commit, Go version and platform.
func String() string {
	return fmt.Sprintf("%s (commit %s, %s, %s/%s)", Version, Revision(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

// Revision returns the commit the binary was built from: Commit when the
// build stamped it, else the revision Go recorded from version control, else
// "unknown".
func Revision() string {
	if Commit != "" {
		return Commit
	}
	if r := vcsRevision(); r != "" {
		return r
	}
	return "unknown"
}

func vcsRevision() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return ""
	}
	for _, s := range info.Settings {
		if s.Key == "vcs.revision" {
			return s.Value
		}
	}
	return ""
}
