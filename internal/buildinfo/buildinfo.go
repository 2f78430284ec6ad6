// Package buildinfo holds the version stamped into the binary at build time.
package buildinfo

import "runtime/debug"

// Version is set with -ldflags "-X github.com/polyfn/polyfn/internal/buildinfo.Version=...":
// `git describe --tags` of the tree it was built from (make build, make dist).
var Version = "dev"

// Commit is set with -ldflags "-X github.com/polyfn/polyfn/internal/buildinfo.Commit=...": the
// full commit hash. Unset, it is the revision the go command recorded (vcs.revision), if any.
var Commit = ""

func init() {
	if Commit != "" {
		return
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				Commit = s.Value
			}
		}
	}
}

// CommitOrUnknown is Commit, or "unknown" when the binary carries none.
func CommitOrUnknown() string {
	if Commit == "" {
		return "unknown"
	}
	return Commit
}

// HostVersion is the protocol-facing version string the host reports.
func HostVersion() string { return "polyfn/" + Version }
