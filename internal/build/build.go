// Package build makes each function's dependencies ready before the
// function takes traffic: a Python function's requirements installed into
// an environment of its own, a Node.js function's packages, a Go function's
// binary. Results are cached in the build directory (build.dir, by default
// StateDir/build), keyed by their inputs, shared by functions with the same
// inputs, and rebuilt only when an input changes. A build never changes anything
// outside its own cache entry (Node.js aside: a function's codedir gets a
// node_modules link to its entry, see node.go).
package build

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/polyfn/polyfn/internal/builduser"
	"github.com/polyfn/polyfn/internal/config"
	"github.com/polyfn/polyfn/internal/gobuild"
)

// Bounds of a build run; docs/functions.md documents them.
const (
	// DefaultParallel is how many functions are built at once.
	DefaultParallel = 4
	// DefaultTimeout bounds one function's build (an installer that hangs
	// on an unreachable index fails the function after it).
	DefaultTimeout = 10 * time.Minute
	// outputTail is how much of a failed tool's output an error keeps.
	outputTail = 30
)

// Kind is what a function's build makes.
type Kind string

const (
	KindPython Kind = "python" // requirements.txt / pyproject.toml → a package directory
	KindNode   Kind = "node"   // package.json → node_modules
	KindGo     Kind = "go"     // a main package → a binary
)

// Spec is one function to build.
type Spec struct {
	Function string
	Kind     Kind
	Codedir  string
	// Runtime is the function's effective runtime (it says which
	// interpreter the dependencies are built for).
	Runtime config.Runtime
	// err is a problem found while planning (a package.json that is not
	// JSON): the build fails with it without running anything.
	err *Error
}

// Result is the outcome of one function's build.
type Result struct {
	Function string
	Kind     Kind
	// Path is the directory of a Python function's packages, the
	// node_modules of a Node.js function, the binary of a Go function.
	// Empty when the function turned out to need nothing.
	Path string
	// Cached: nothing was run, the result was in the cache.
	Cached   bool
	Duration time.Duration
	// Err is nil or an *Error.
	Err error
}

// Error is a build that failed.
type Error struct {
	Function string
	// Command is the command that failed, as a shell would show it.
	Command string
	// Output is the tail of the tool's output.
	Output string
	Err    error
}

func (e *Error) Error() string {
	msg := fmt.Sprintf("function %s: build failed: %s", e.Function, e.Command)
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	if e.Output != "" {
		msg += "\n" + e.Output
	}
	return msg
}

func (e *Error) Unwrap() error { return e.Err }

// Event reports progress: a build starting (Done false) or finished.
type Event struct {
	Spec   Spec
	Done   bool
	Result Result
	// Command is the command a starting build runs.
	Command string
}

// Options configure a Builder.
type Options struct {
	// Dir is the cache directory (Dir(cfg)).
	Dir string
	// Parallel bounds the builds run at once. Zero means DefaultParallel.
	Parallel int
	// Timeout bounds each build. Zero means DefaultTimeout.
	Timeout time.Duration
	Log     *slog.Logger
	// Progress, if set, is called (from the builds' goroutines, one call
	// at a time) as each build starts and ends.
	Progress func(Event)
	// Runner, when set, runs the installers and compilers as a user of
	// their own (internal/builduser; builduser.For says when).
	Runner *builduser.Runner
}

// Builder builds functions' dependencies into its cache. It is safe for
// concurrent use.
type Builder struct {
	o  Options
	gb *gobuild.Builder

	mu    sync.Mutex
	locks map[string]*sync.Mutex // per cache entry
	progs sync.Mutex             // serialises Progress calls
	// installs counts the installers run (tests check the cache with it).
	installs int
}

// New returns a builder for o.
func New(o Options) *Builder {
	if o.Parallel <= 0 {
		o.Parallel = DefaultParallel
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	gb := gobuild.New(filepath.Join(o.Dir, "go"))
	gb.Runner = o.Runner
	return &Builder{o: o, gb: gb, locks: map[string]*sync.Mutex{}}
}

// Dir returns the cache directory of cfg: build.dir when set, else
// StateDir/build, or the user's cache directory when there is no state
// directory.
func Dir(cfg *config.Config) string {
	if cfg.Build.Dir != "" {
		return cfg.Build.Dir
	}
	if cfg.StateDir != "" {
		return filepath.Join(cfg.StateDir, "build")
	}
	return filepath.Join(filepath.Dir(gobuild.DefaultDir()), "build")
}

// Installs returns how many installers (pip, uv, npm, go build) this
// builder has run.
func (b *Builder) Installs() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.installs
}

func (b *Builder) ran() {
	b.mu.Lock()
	b.installs++
	b.mu.Unlock()
}

// Plan returns the functions of cfg that have something to build: Go
// functions without a prebuilt binary, and functions of the built-in
// python3 and node runtimes whose codedir declares dependencies.
func Plan(cfg *config.Config) []Spec {
	var out []Spec
	for _, fc := range cfg.Functions {
		rt := cfg.Effective(fc)
		if rt.Discovery == config.DiscoveryApp {
			continue // an Azure Functions app brings its own
		}
		sp := Spec{Function: fc.Name, Codedir: fc.Codedir, Runtime: rt}
		switch {
		case rt.Build == "go":
			if fc.Handler != "" {
				continue
			}
			sp.Kind = KindGo
		case rt.BuiltIn && rt.Name == "python3":
			if !exists(filepath.Join(fc.Codedir, "requirements.txt")) && !exists(filepath.Join(fc.Codedir, "pyproject.toml")) {
				continue
			}
			sp.Kind = KindPython
		case rt.BuiltIn && rt.Name == "node":
			need, err := nodeNeeds(fc.Codedir)
			if err != nil {
				sp.err = &Error{Function: fc.Name, Command: "read " + filepath.Join(fc.Codedir, "package.json"), Err: err}
			} else if !need {
				continue
			}
			sp.Kind = KindNode
		default:
			continue
		}
		out = append(out, sp)
	}
	return out
}

// Run builds specs, at most Options.Parallel at once, and returns one
// result per spec, in order. Cancelling ctx stops the builds in progress.
func (b *Builder) Run(ctx context.Context, specs []Spec) []Result {
	results := make([]Result, len(specs))
	sem := make(chan struct{}, b.o.Parallel)
	var wg sync.WaitGroup
	for i, sp := range specs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				results[i] = Result{Function: sp.Function, Kind: sp.Kind, Err: &Error{Function: sp.Function, Command: "build", Err: ctx.Err()}}
				return
			}
			defer func() { <-sem }()
			results[i] = b.one(ctx, sp)
		}()
	}
	wg.Wait()
	return results
}

func (b *Builder) one(ctx context.Context, sp Spec) Result {
	began := time.Now()
	ctx, cancel := context.WithTimeout(ctx, b.o.Timeout)
	defer cancel()
	r := Result{Function: sp.Function, Kind: sp.Kind}
	if sp.err != nil {
		r.Err = sp.err
	} else {
		var err error
		switch sp.Kind {
		case KindPython:
			r.Path, r.Cached, err = b.python(ctx, sp)
		case KindNode:
			r.Path, r.Cached, err = b.node(ctx, sp)
		case KindGo:
			r.Path, r.Cached, err = b.goBinary(ctx, sp)
		}
		if err != nil {
			var be *Error
			if !errors.As(err, &be) {
				be = &Error{Function: sp.Function, Command: string(sp.Kind) + " build", Err: err}
			}
			if ctx.Err() == context.DeadlineExceeded {
				be.Err = fmt.Errorf("timed out after %s (DefaultTimeout): %w", b.o.Timeout, context.DeadlineExceeded)
			}
			r.Err = be
		}
	}
	r.Duration = time.Since(began)
	switch {
	case r.Err != nil:
		b.o.Log.Error("function build failed; the function is broken", "function", sp.Function, "kind", sp.Kind, "error", r.Err)
	case r.Cached:
		b.o.Log.Debug("function build cached", "function", sp.Function, "kind", sp.Kind, "path", r.Path, "duration", r.Duration)
	default:
		b.o.Log.Info("function built", "function", sp.Function, "kind", sp.Kind, "path", r.Path, "duration", r.Duration.Round(time.Millisecond))
	}
	b.progress(Event{Spec: sp, Done: true, Result: r})
	return r
}

// starting reports a build about to run command.
func (b *Builder) starting(sp Spec, command string) {
	b.o.Log.Info("building function", "function", sp.Function, "kind", sp.Kind, "command", command)
	b.progress(Event{Spec: sp, Command: command})
}

func (b *Builder) progress(e Event) {
	if b.o.Progress == nil {
		return
	}
	b.progs.Lock()
	defer b.progs.Unlock()
	b.o.Progress(e)
}

// lock returns the mutex of a cache entry: functions with the same inputs
// build once.
func (b *Builder) lock(entry string) *sync.Mutex {
	b.mu.Lock()
	defer b.mu.Unlock()
	l, ok := b.locks[entry]
	if !ok {
		l = &sync.Mutex{}
		b.locks[entry] = l
	}
	return l
}

// session begins the build user's session of an installer that fills
// tmp, once it can read sp's codedir: out is tmp, or the build user's
// directory whose result Take moves to tmp. The caller closes s.
func (b *Builder) session(sp Spec, tmp string) (s *builduser.Session, out string, err error) {
	s, err = b.o.Runner.Begin()
	if err != nil {
		return nil, "", err
	}
	if err := s.Readable("codedir "+sp.Codedir, sp.Codedir); err != nil {
		s.Close()
		return nil, "", &Error{Function: sp.Function, Command: "read codedir", Err: err}
	}
	return s, s.Out(tmp), nil
}

// entry makes the cache entry dir with fill, unless it exists: fill writes
// into a temporary directory that is renamed to dir once complete, so an
// entry that exists is whole. It reports whether the entry was cached.
func (b *Builder) entry(dir string, fill func(tmp string) error) (cached bool, err error) {
	l := b.lock(dir)
	l.Lock()
	defer l.Unlock()
	if st, err := os.Stat(dir); err == nil && st.IsDir() {
		return true, nil
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return false, err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), filepath.Base(dir)+".tmp-")
	if err != nil {
		return false, err
	}
	// Workers may run as users of their own: the entry must be theirs to read.
	if err := os.Chmod(tmp, 0o755); err != nil {
		os.RemoveAll(tmp)
		return false, err
	}
	if err := fill(tmp); err != nil {
		os.RemoveAll(tmp)
		return false, err
	}
	if err := os.Rename(tmp, dir); err != nil {
		os.RemoveAll(tmp)
		if st, serr := os.Stat(dir); serr == nil && st.IsDir() {
			return false, nil // another host built it meanwhile
		}
		return false, err
	}
	return false, nil
}

// tail returns the last outputTail lines of out.
func tail(out string) string {
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) > outputTail {
		lines = append([]string{"…"}, lines[len(lines)-outputTail:]...)
	}
	return strings.Join(lines, "\n")
}

// shell renders a command for messages.
func shell(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		if a == "" || strings.ContainsAny(a, " \t\"'$\\") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		q[i] = a
	}
	return strings.Join(q, " ")
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
