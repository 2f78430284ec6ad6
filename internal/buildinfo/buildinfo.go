// Package buildinfo holds the version stamped into the binary at build time.
package buildinfo

// Version is set with -ldflags "-X github.com/polyfn/polyfn/internal/buildinfo.Version=...".
var Version = "dev"

// HostVersion is the protocol-facing version string the host reports.
func HostVersion() string { return "polyfn/" + Version }
