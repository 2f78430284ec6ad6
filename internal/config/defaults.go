package config

import (
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/polyfn/polyfn/internal/runtimes"
)

// Defaults. docs/config.md documents each of them; keep the two in step.
const (
	DefaultListen = "127.0.0.1:8080"
	// DefaultAdminListen is admin.listen's: loopback only (auth.go).
	DefaultAdminListen  = "127.0.0.1:9180"
	DefaultMaxBody      = 6 << 20 // 6 MiB
	DefaultRuntime      = "python3"
	DefaultTimeout      = 30 * time.Second
	DefaultConcurrency  = 8
	DefaultQueue        = 100
	DefaultMaxInstances = 4
	DefaultIdle         = 5 * time.Minute
	DefaultStartTimeout = 10 * time.Second
	DefaultStopGrace    = 10 * time.Second
	DefaultInitTimeout  = 60 * time.Second
	DefaultCancelGrace  = 5 * time.Second
	// DefaultMaxInstancesTotal caps the host's live instances.
	DefaultMaxInstancesTotal = 256
	DefaultAddress           = "tcp"
	MaxFunctionNameBytes     = 64
	// DefaultUIDs is where the user ids of isolation.user auto come from:
	// the range systemd sets aside for dynamic users, above the ids of
	// distributions' system and human users and below nobody (65534).
	DefaultUIDs = "61184-65519"
)

// The HTTP listener's bounds; docs/operations.md ("Memory under slow
// clients") derives the host's memory bound from them.
const (
	DefaultMaxBodyTotal      = 64 << 20 // 64 MiB
	DefaultMaxStreamBody     = 1 << 30  // 1 GiB
	DefaultMaxHeaderBytes    = 32 << 10 // 32 KiB
	DefaultMaxConnections    = 512
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultBodyTimeout       = 30 * time.Second
	DefaultWriteTimeout      = 30 * time.Second
	DefaultIdleTimeout       = 30 * time.Second
)

// The defaults of a CORS policy (cors.go) that sets allow_origins.
const DefaultCORSMaxAge = 10 * time.Minute

var (
	// DefaultCORSMethods are the methods a preflight may ask for.
	DefaultCORSMethods = []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"}
	// DefaultCORSHeaders are the request headers a preflight may ask for:
	// the common ones and those that carry a function key.
	DefaultCORSHeaders = []string{"Accept", "Authorization", "Content-Type", "X-Requested-With", "X-Polyfn-Key", "X-Functions-Key"}
)

// BuiltinRuntimes returns the runtimes polyfn defines. A runtime declared in
// the config under the same name replaces the built-in one.
//
// The Python and Node.js runtimes are the ones installed with polyfn, found
// relative to its executable (internal/runtimes); without them, python3
// and polyfn-node on PATH.
func BuiltinRuntimes() map[string]Runtime {
	home := runtimes.Locate()
	py, node := home.Python(), home.Node()
	return map[string]Runtime{
		"python3": {
			Name:     "python3",
			Protocol: ProtocolStream,
			// polyfn's Python runtime: python -m polyfn_runtime in the
			// virtualenv installed with polyfn.
			Command:     py.Command,
			CallCommand: py.CallCommand,
			Discovery:   DiscoveryConfig,
			Env:         map[string]string{"PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1", "FUNCTIONS_WORKER_RUNTIME": "python"},
			Address:     "unix",
			BuiltIn:     true,
		},
		"node": {
			Name:     "node",
			Protocol: ProtocolStream,
			// polyfn's Node.js runtime: node running the runtime's
			// bin/polyfn-node.js installed with polyfn.
			Command:     node.Command,
			CallCommand: node.CallCommand,
			Discovery:   DiscoveryConfig,
			Env:         map[string]string{"FUNCTIONS_WORKER_RUNTIME": "node"},
			Address:     "unix",
			BuiltIn:     true,
		},
		"go": {
			Name:     "go",
			Protocol: ProtocolStream,
			// A main package using the Go SDK, built by the host.
			Command:     []string{"{binary}"},
			CallCommand: []string{"{binary}", "-c", "{config}"},
			Build:       "go",
			Discovery:   DiscoveryConfig,
			Env:         map[string]string{"FUNCTIONS_WORKER_RUNTIME": "go"},
			Address:     "unix",
			BuiltIn:     true,
		},
	}
}

// Effective returns the runtime a function runs with: the function's runtime,
// switched to its call command when the function selects protocol: call on a
// runtime that speaks both.
func (c *Config) Effective(f Function) Runtime {
	rt := c.Runtimes[f.Runtime]
	if f.Protocol == ProtocolCall && rt.Protocol == ProtocolStream && len(rt.CallCommand) > 0 {
		rt.Protocol, rt.Command, rt.Discovery = ProtocolCall, rt.CallCommand, DiscoveryConfig
	}
	return rt
}

// DefaultMaxStarting is how many instances start at once by default: two per
// CPU, at least four.
func DefaultMaxStarting() int { return max(4, 2*runtime.NumCPU()) }

// DefaultStateDir is the state directory when neither state_dir nor
// --state-dir names one: $XDG_STATE_HOME/polyfn when XDG_STATE_HOME is set
// (to an absolute path), /var/lib/polyfn for root, else
// ~/.local/state/polyfn; empty when there is no home directory.
func DefaultStateDir() string {
	if d := os.Getenv("XDG_STATE_HOME"); filepath.IsAbs(d) {
		return filepath.Join(d, "polyfn")
	}
	if os.Geteuid() == 0 {
		return "/var/lib/polyfn"
	}
	if h, err := os.UserHomeDir(); err == nil && filepath.IsAbs(h) {
		return filepath.Join(h, ".local", "state", "polyfn")
	}
	return ""
}

func applyDefaults(c *Config) {
	switch {
	case c.StateDir == "":
		c.StateDir = DefaultStateDir()
	case !filepath.IsAbs(c.StateDir):
		c.StateDir = filepath.Join(c.Dir, c.StateDir)
	}
	if c.Build.Dir != "" && !filepath.IsAbs(c.Build.Dir) {
		c.Build.Dir = filepath.Join(c.Dir, c.Build.Dir)
	}
	if c.Scaling.MaxInstances == 0 {
		c.Scaling.MaxInstances = DefaultMaxInstancesTotal
	}
	if c.Scaling.MaxStarting == 0 {
		c.Scaling.MaxStarting = DefaultMaxStarting()
	}
	applyMQTTDefaults(c)
	if c.Isolation.User == "" {
		c.Isolation.User = UserAuto
	}
	if c.Isolation.UIDs == "" {
		c.Isolation.UIDs = DefaultUIDs
	}
	if c.HTTP.Listen == "" {
		c.HTTP.Listen = DefaultListen
	}
	if c.HTTP.MaxBody == 0 {
		c.HTTP.MaxBody = DefaultMaxBody
	}
	if c.HTTP.MaxBodyTotal == 0 {
		c.HTTP.MaxBodyTotal = max(DefaultMaxBodyTotal, c.HTTP.MaxBody)
	}
	if c.HTTP.MaxStreamBody == 0 {
		c.HTTP.MaxStreamBody = DefaultMaxStreamBody
	}
	if c.HTTP.MaxHeaderBytes == 0 {
		c.HTTP.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if c.HTTP.MaxConnections == 0 {
		c.HTTP.MaxConnections = DefaultMaxConnections
	}
	if c.HTTP.ReadHeaderTimeout == 0 {
		c.HTTP.ReadHeaderTimeout = Duration(DefaultReadHeaderTimeout)
	}
	if c.HTTP.BodyTimeout == 0 {
		c.HTTP.BodyTimeout = Duration(DefaultBodyTimeout)
	}
	if c.HTTP.WriteTimeout == 0 {
		c.HTTP.WriteTimeout = Duration(DefaultWriteTimeout)
	}
	if c.HTTP.IdleTimeout == 0 {
		c.HTTP.IdleTimeout = Duration(DefaultIdleTimeout)
	}
	rts := BuiltinRuntimes()
	for name, rt := range c.Runtimes {
		rt.Name = name
		rts[name] = rt
	}
	for name, rt := range rts {
		if rt.Address == "" {
			rt.Address = DefaultAddress
		}
		if rt.StartTimeout == 0 {
			rt.StartTimeout = Duration(DefaultStartTimeout)
		}
		if rt.StopGrace == 0 {
			rt.StopGrace = Duration(DefaultStopGrace)
		}
		if rt.InitTimeout == 0 {
			rt.InitTimeout = Duration(DefaultInitTimeout)
		}
		if rt.CancelGrace == 0 {
			rt.CancelGrace = Duration(DefaultCancelGrace)
		}
		if rt.Discovery == "" {
			rt.Discovery = DiscoveryConfig
			if rt.Protocol == ProtocolStream {
				rt.Discovery = DiscoveryApp
			}
		}
		rts[name] = rt
	}
	c.Runtimes = rts
	apps := map[string]App{}
	for name, a := range c.Apps {
		a.Name = name
		apps[name] = a
	}
	for _, f := range c.Functions {
		if f.App != "" {
			if _, ok := apps[f.App]; !ok {
				apps[f.App] = App{Name: f.App}
			}
		}
	}
	for name, a := range apps {
		if a.Concurrency == 0 {
			a.Concurrency = DefaultConcurrency
		}
		if a.Queue == 0 {
			a.Queue = DefaultQueue
		}
		if a.Instances.Max == 0 {
			a.Instances.Max = max(DefaultMaxInstances, a.Instances.Min)
		}
		if a.Instances.Idle == 0 {
			a.Instances.Idle = Duration(DefaultIdle)
		}
		apps[name] = a
	}
	c.Apps = apps
	for i := range c.Functions {
		f := &c.Functions[i]
		if f.Runtime == "" {
			f.Runtime = DefaultRuntime
		}
		if f.Timeout == 0 {
			f.Timeout = Duration(DefaultTimeout)
		}
		if f.Concurrency == 0 {
			f.Concurrency = DefaultConcurrency
		}
		if f.Queue == 0 {
			f.Queue = DefaultQueue
		}
		if f.Instances.Max == 0 {
			f.Instances.Max = max(DefaultMaxInstances, f.Instances.Min)
		}
		if f.Instances.Idle == 0 {
			f.Instances.Idle = Duration(DefaultIdle)
		}
	}
}
