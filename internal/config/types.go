// Package config loads, defaults and validates polyfn's configuration file.
//
// The schema is strict: an unknown key, a value of the wrong type or a missing
// required field is an error that names the file, line, column and key. Every
// default lives in defaults.go and is documented in docs/config.md.
package config

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/polyfn/polyfn/internal/secret"
)

// Config is a whole configuration file after defaults were applied.
type Config struct {
	// File is the absolute path of the file the config was read from.
	File string `yaml:"-"`
	// Dir is the directory of File; relative paths in the config are relative to it.
	Dir string `yaml:"-"`

	HTTP      HTTP               `yaml:"http"`
	Runtimes  map[string]Runtime `yaml:"runtimes"`
	Functions []Function         `yaml:"functions"`
	// Apps holds the pool settings of shared-worker apps (see Function.App).
	Apps map[string]App `yaml:"apps"`
	// Scaling holds host-wide limits on instances.
	Scaling Scaling `yaml:"scaling"`
	// MQTT configures the MQTT trigger and the embedded broker.
	MQTT MQTT `yaml:"mqtt"`
	// StateDir is the host's state directory: what must outlive the process
	// (the embedded broker's store, under mqtt/). Relative to the config
	// file's directory. Empty means DefaultStateDir(); empty after that
	// when there is no default (no home directory).
	StateDir string `yaml:"state_dir"`
	// Build configures where the functions' dependencies are built.
	Build Build `yaml:"build"`
	// Isolation says which users workers run as when a function (or app)
	// does not name one.
	Isolation Isolation `yaml:"isolation"`
	// Stream configures the stream protocol's server.
	Stream Stream `yaml:"stream"`
	// LeaderElection says whether the timers of this host fire only while
	// it holds a Kubernetes Lease, so that N replicas fire each tick once.
	LeaderElection LeaderElection `yaml:"leader_election"`

	// Secrets holds the values taken from the environment and from files
	// (${VAR}, ${file:PATH}, env_from); whatever prints the config masks them.
	Secrets *secret.Set `yaml:"-"`
	// Auth says which requests need a key, and holds the keys (auth.go).
	Auth Auth `yaml:"auth"`
	// Admin configures the admin listener (auth.go).
	Admin Admin `yaml:"admin"`
}

// Build configures the cache of the functions' built dependencies
// (internal/build).
type Build struct {
	// Dir is the build cache directory, relative to the config file's
	// directory. Empty means StateDir/build (internal/build.Dir). A cache
	// whose entries are all built is only read: it may be read-only, as in
	// a container image whose dependencies were built at image build time.
	Dir string `yaml:"dir"`
}

// The values of Isolation.User with a meaning of their own.
const (
	// UserAuto: a host running as root runs each instance as a user id of
	// its own from Isolation.UIDs; another host runs workers as itself.
	UserAuto = "auto"
	// UserHost: workers run as the host's own user.
	UserHost = "host"
)

// Isolation is the host-wide default of the user workers run as.
type Isolation struct {
	// User is UserAuto, UserHost, or a user name or id every worker runs as.
	// A function's (or app's) own user and group win over it. Empty means
	// UserAuto.
	User string `yaml:"user"`
	// UIDs is the range ("LO-HI") the user ids of UserAuto come from; each
	// id doubles as the group id. Empty means DefaultUIDs.
	UIDs string `yaml:"uids"`
}

// UIDRange returns the bounds of UIDs; it must have been validated.
func (i Isolation) UIDRange() (lo, hi uint32) {
	lo, hi, _ = parseUIDRange(i.UIDs)
	return lo, hi
}

func parseUIDRange(s string) (lo, hi uint32, err error) {
	a, b, ok := strings.Cut(s, "-")
	l, err1 := strconv.ParseUint(strings.TrimSpace(a), 10, 32)
	h, err2 := strconv.ParseUint(strings.TrimSpace(b), 10, 32)
	if !ok || err1 != nil || err2 != nil || l == 0 || h < l || h >= 1<<32-1 {
		return 0, 0, fmt.Errorf("invalid range %q: want LO-HI, two user ids with 0 < LO <= HI, such as %s", s, DefaultUIDs)
	}
	return uint32(l), uint32(h), nil
}

// Scaling bounds the instances of the whole host, whatever the functions'
// own limits.
type Scaling struct {
	// MaxInstances caps the live instances of all functions together (standby
	// workers included). When it is reached, an idle instance of another
	// function is stopped to make room. Zero means DefaultMaxInstancesTotal.
	MaxInstances int `yaml:"max_instances"`
	// MaxStarting caps the instances starting at once, so that many cold
	// functions do not start all their processes in the same second. Zero
	// means DefaultMaxStarting.
	MaxStarting int `yaml:"max_starting"`
}

// HTTP configures the HTTP trigger. Every key but MaxBody and MaxStreamBody
// belongs to the listener and takes effect on restart; those two follow
// reloads.
type HTTP struct {
	// Listen is the address the HTTP trigger listens on. Empty means DefaultListen.
	Listen string `yaml:"listen"`
	// MaxBody is the largest request body accepted; larger bodies get 413.
	// Zero means DefaultMaxBody.
	MaxBody Size `yaml:"max_body"`
	// MaxBodyTotal bounds the request-body bytes buffered at once, all
	// requests together; a request that would go past it gets 503. It must
	// be at least MaxBody. Zero means DefaultMaxBodyTotal.
	MaxBodyTotal Size `yaml:"max_body_total"`
	// MaxStreamBody is the largest request body of a streaming app function
	// (a worker that serves HTTP itself, the HttpUri capability), whose body
	// is passed through as it arrives instead of being buffered; larger ones
	// get 413. Zero means DefaultMaxStreamBody.
	MaxStreamBody Size `yaml:"max_stream_body"`
	// MaxHeaderBytes bounds a request's line and header fields; larger ones
	// get 431. Zero means DefaultMaxHeaderBytes.
	MaxHeaderBytes Size `yaml:"max_header_bytes"`
	// MaxConnections bounds the open connections, idle ones included; a
	// connection past it is answered 503 and closed. Zero means
	// DefaultMaxConnections.
	MaxConnections int `yaml:"max_connections"`
	// ReadHeaderTimeout bounds the time from a connection's first byte of a
	// request to the end of its header. Zero means DefaultReadHeaderTimeout.
	ReadHeaderTimeout Duration `yaml:"read_header_timeout"`
	// BodyTimeout bounds the time from the end of a request's header to the
	// end of its body, whatever the client sends meanwhile; past it the
	// request gets 408 and the connection is closed. Zero means
	// DefaultBodyTimeout.
	BodyTimeout Duration `yaml:"body_timeout"`
	// WriteTimeout bounds the sending of a response, from the moment the
	// function's result is there (the function's own time is bounded by its
	// timeout, not by this). Zero means DefaultWriteTimeout.
	WriteTimeout Duration `yaml:"write_timeout"`
	// IdleTimeout bounds how long a keep-alive connection may wait for its
	// next request. Zero means DefaultIdleTimeout.
	IdleTimeout Duration `yaml:"idle_timeout"`
	// TLS, when set, makes the listener serve HTTPS (tls.go).
	TLS ServerTLS `yaml:"tls"`
	// CORS is the host-wide CORS policy (cors.go); nil: off. Follows
	// reloads.
	CORS *CORS `yaml:"cors"`
}

// Protocol names a worker protocol.
type Protocol string

// The worker protocols polyfn speaks.
const (
	// ProtocolCall is the Baetyl convention: the worker is a gRPC server and
	// the host calls /baetyl.Function/Call once per invocation.
	ProtocolCall Protocol = "call"
	// ProtocolStream is the Azure Functions language-worker convention: the
	// host is the gRPC server and each worker opens one EventStream.
	ProtocolStream Protocol = "stream"
)

// Discovery says where a runtime's functions come from.
type Discovery string

// Discovery modes.
const (
	// DiscoveryConfig: the functions are the entries of polyfn.yaml; the host
	// tells the worker what to load.
	DiscoveryConfig Discovery = "config"
	// DiscoveryApp: codedir is an Azure Functions app; the worker (or the
	// host, from function.json files) discovers its functions.
	DiscoveryApp Discovery = "app"
)

// Runtime says how to start a worker for a language and which protocol it speaks.
type Runtime struct {
	// Name is the key the runtime is declared under.
	Name string `yaml:"-"`
	// Protocol is the worker protocol. Required for declared runtimes.
	Protocol Protocol `yaml:"protocol"`
	// Command is the worker's argv. The placeholder {config} is replaced by the
	// path of the runtime config file the host writes for each instance; when
	// no argument holds it, "-c FILE" is appended. Required.
	Command []string `yaml:"command"`
	// CallCommand is the argv for call-protocol workers of a runtime whose
	// Protocol is stream but that speaks both (polyfn's own runtimes); a
	// function selects it with protocol: call.
	CallCommand []string `yaml:"call_command"`
	// Discovery says where the functions come from: "config" (entries of
	// polyfn.yaml) or "app" (an Azure Functions app in codedir). Zero means
	// "app" for declared stream runtimes and "config" otherwise.
	Discovery Discovery `yaml:"discovery"`
	// Build, when "go", makes the host build each function's codedir with
	// go build (cached by source) and put the binary where {binary} stands in
	// the command. A function's handler, when set, names a prebuilt binary
	// (relative to codedir) instead.
	Build string `yaml:"build"`
	// Env is added to the worker's scrubbed environment.
	Env map[string]string `yaml:"env"`
	// Address is where call-protocol workers listen: "tcp" (127.0.0.1 on a free
	// port, which every Baetyl runtime supports) or "unix" (a socket in the
	// instance's private directory). Zero means "tcp" for declared runtimes.
	Address string `yaml:"address"`
	// StartTimeout bounds the time from process start to readiness.
	// Zero means DefaultStartTimeout.
	StartTimeout Duration `yaml:"start_timeout"`
	// InitTimeout bounds a stream worker's start: from process start through
	// StartStream, init, indexing and function load. Zero means DefaultInitTimeout.
	InitTimeout Duration `yaml:"init_timeout"`
	// CancelGrace is how long a stream worker has to answer an invocation
	// after the host gave up on it (timeout, InvocationCancel); a worker
	// that does not is replaced, since it still holds the slot. Zero means
	// DefaultCancelGrace.
	CancelGrace Duration `yaml:"cancel_grace"`
	// Standby keeps one worker of this runtime started and initialised but
	// bound to no function, so that a function with no live instance is
	// served by binding it (environment reload, function load) instead of
	// starting a process. Stream runtimes with discovery "config" only. Nil
	// means on for built-in runtimes (except go, whose workers are the
	// functions' own programs) and off for declared ones.
	Standby *bool `yaml:"standby"`
	// StopGrace is how long a worker has to exit after SIGTERM before its
	// process group is killed. Zero means DefaultStopGrace.
	StopGrace Duration `yaml:"stop_grace"`
	// BuiltIn is true for runtimes polyfn defines itself.
	BuiltIn bool `yaml:"-"`
}

// Function is a named unit of user code and its settings.
type Function struct {
	// Name is unique among functions and used in URLs: /function/{name}.
	Name string `yaml:"name"`
	// Runtime names a built-in or declared runtime. Empty means DefaultRuntime.
	Runtime string `yaml:"runtime"`
	// Protocol selects the call protocol on a runtime that speaks both.
	// Zero means the runtime's protocol.
	Protocol Protocol `yaml:"protocol"`
	// Handler is the entry point: module.function for Python, file.export
	// for Node.js, a prebuilt binary for Go (optional: the host builds
	// codedir). Required for other runtimes with discovery "config"; unused
	// for apps.
	Handler string `yaml:"handler"`
	// Codedir holds the function's code. Relative to the config file's
	// directory; made absolute by Load. Required, and it must exist.
	Codedir string `yaml:"codedir"`
	// Dependencies is not read from the file: the host sets it to the
	// directory of the function's built dependencies (internal/build), which
	// polyfn's runtimes add to their module search path after their own.
	Dependencies string `yaml:"-"`
	// Env is added to the worker's scrubbed environment (after the runtime's).
	Env map[string]string `yaml:"env"`
	// EnvFrom lists files of KEY=VALUE lines and directories of files (a
	// mounted Kubernetes Secret) whose variables are added to Env; a key
	// written in Env wins. Relative to the config file's directory. The
	// values are secret.
	EnvFrom []string `yaml:"env_from"`
	// Timeout bounds each invocation, queueing included. Zero means DefaultTimeout.
	Timeout Duration `yaml:"timeout"`
	// Concurrency is the number of invocations one instance runs at once.
	// Zero means DefaultConcurrency.
	Concurrency int `yaml:"concurrency"`
	// Queue is how many invocations may wait for a free slot; past it the
	// host answers 429. Zero means DefaultQueue.
	Queue int `yaml:"queue"`
	// Instances bounds the pool.
	Instances Instances `yaml:"instances"`
	// App names a shared-worker app: every function naming the same app (and
	// runtime) is loaded into each of the app's workers, and they share one
	// pool whose settings and env belong to the app (apps.NAME). Empty: the
	// function has a pool of its own.
	App string `yaml:"app"`
	// Limits bounds each worker's memory, processes and CPU (for app
	// functions, set them under apps.NAME).
	Limits Limits `yaml:"limits"`
	// User and Group, when set, are the user and group the workers run as
	// (a name or a numeric id); the host must be able to switch to them
	// (root, or CAP_SETUID and CAP_SETGID). Empty: the host's own.
	User  string `yaml:"user"`
	Group string `yaml:"group"`
	// Triggers lists the MQTT rules and timers that invoke the function.
	Triggers Triggers `yaml:"triggers"`
	// Auth is the function's auth level over HTTP: anonymous, function or
	// admin. Empty means Config.DefaultLevel; auth.level wins over it.
	Auth string `yaml:"auth"`
	// CORS, when set, is the function's CORS policy (cors.go), replacing
	// http.cors whole; for an Azure Functions app, every HTTP function of
	// the app's.
	CORS *CORS `yaml:"cors"`
}

// App holds the pool settings of functions that share workers.
type App struct {
	// Name is the key the app is declared under.
	Name        string            `yaml:"-"`
	Env         map[string]string `yaml:"env"`
	EnvFrom     []string          `yaml:"env_from"`
	Concurrency int               `yaml:"concurrency"`
	Queue       int               `yaml:"queue"`
	Instances   Instances         `yaml:"instances"`
	Limits      Limits            `yaml:"limits"`
	User        string            `yaml:"user"`
	Group       string            `yaml:"group"`
}

// StandbyEnabled reports whether the runtime keeps a standby worker. Over
// the call protocol only polyfn's own Python and Node.js runtimes do (they
// speak the standby handshake; a declared Baetyl runtime is started as it
// always was).
func (r Runtime) StandbyEnabled() bool {
	if r.Protocol == ProtocolCall {
		return r.BuiltIn && r.Build == "" && (r.Name == "python3" || r.Name == "node") && (r.Standby == nil || *r.Standby)
	}
	if r.Protocol != ProtocolStream || r.Discovery != DiscoveryConfig || r.Build != "" {
		return false
	}
	if r.Standby != nil {
		return *r.Standby
	}
	return r.BuiltIn
}

// Instances bounds a function's pool.
type Instances struct {
	// Min instances are started with the host and kept. Zero: scale to zero.
	Min int `yaml:"min"`
	// Max is the most instances the pool runs. Zero means DefaultMaxInstances.
	Max int `yaml:"max"`
	// Idle is how long an unused instance above Min lives. Zero means DefaultIdle.
	Idle Duration `yaml:"idle"`
}

// Duration is a time.Duration written as a Go duration string ("30s", "5m").
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return time.Duration(d).String() }

func (d *Duration) parseScalar(s string) error {
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("invalid duration %q (want a Go duration such as 30s or 5m)", s)
	}
	if v < 0 {
		return fmt.Errorf("duration %q must not be negative", s)
	}
	*d = Duration(v)
	return nil
}

// Size is a byte count written as a plain integer or a quantity such as
// 128Mi, 6M or 512Ki.
type Size int64

func (s *Size) parseScalar(v string) error {
	n, err := ParseSize(v)
	if err != nil {
		return err
	}
	*s = Size(n)
	return nil
}

// ParseSize parses a byte quantity: a non-negative integer with an optional
// suffix k, M, G (powers of 1000) or Ki, Mi, Gi (powers of 1024).
func ParseSize(v string) (int64, error) {
	s := strings.TrimSpace(v)
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}, {"k", 1e3}, {"K", 1e3}, {"M", 1e6}, {"G", 1e9}} {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSuffix(s, u.suffix), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("invalid size %q (want bytes or a quantity such as 6Mi)", v)
	}
	return n * mult, nil
}
