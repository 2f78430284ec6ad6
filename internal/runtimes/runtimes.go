// Package runtimes finds the language runtimes polyfn starts its workers
// with — the Python and Node.js runtimes and the Go SDK's source — relative
// to the polyfn executable, so that the host needs no PATH changes.
//
// Two layouts are known, both found from the directory above the
// executable's (PREFIX):
//
//	installed (make install)        checkout (make build runtimes)
//	PREFIX/bin/polyfn               bin/polyfn
//	PREFIX/lib/polyfn/python/       .venv/           a virtualenv holding polyfn_runtime
//	PREFIX/lib/polyfn/node/         runtimes/node/   bin/polyfn-node.js and its node_modules
//	PREFIX/lib/polyfn/go/sdk/       sdk/go/          module github.com/polyfn/polyfn/sdk/go
//	PREFIX/lib/polyfn/go/api/       api/             module github.com/polyfn/polyfn/api
//
// When neither layout is found (a test binary, a polyfn copied on its
// own), the runtimes are looked up on PATH as commands: python3 with
// polyfn_runtime importable, polyfn-node.
//
// Locating only looks at files; Probe starts the interpreter to prove the
// runtime loads and to read its version.
package runtimes

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"
)

// Layouts.
const (
	Installed = "installed" // PREFIX/bin/polyfn beside PREFIX/lib/polyfn
	Checkout  = "checkout"  // bin/polyfn in a polyfn source checkout
	PathOnly  = "PATH"      // neither: commands looked up on PATH
)

// Runtime names of the built-in interpreted runtimes.
const (
	Python = "python3"
	Node   = "node"
)

// LibDir is where make install puts the runtimes, relative to PREFIX.
const LibDir = "lib/polyfn"

// ProbeTimeout bounds one Probe: an interpreter that does not answer in
// this time is reported as not starting.
const ProbeTimeout = 10 * time.Second

// Home is where polyfn's runtimes are looked for.
type Home struct {
	// Layout is Installed, Checkout or PathOnly.
	Layout string
	// Root is PREFIX (installed) or the checkout's top directory; empty
	// for PathOnly.
	Root string
}

// Runtime is where a runtime was found (or would be).
type Runtime struct {
	Name   string
	Layout string
	// Dir is the runtime's directory: the Python virtualenv, the Node.js
	// runtime's package. Empty for PathOnly.
	Dir string
	// Interpreter is the python or node program: an absolute path, or a
	// command name looked up on PATH (PathOnly).
	Interpreter string
	// Command starts a stream-protocol worker; CallCommand a call-protocol
	// one ({config} is the config file's placeholder).
	Command, CallCommand []string
	// Fix is the command that would install or repair the runtime.
	Fix string
	// Err says why the runtime is not usable, from its files alone; nil
	// when it looks complete (Probe proves it starts).
	Err error
}

var (
	homeOnce sync.Once
	home     Home
)

// HomeEnv names the environment variable that sets the directory the
// runtimes are found under (an installed PREFIX or a checkout) instead of
// the one above the executable's: for a binary built elsewhere (tests, a
// package that puts the binary in another place).
const HomeEnv = "POLYFN_HOME"

// Locate returns the layout polyfn's runtimes are found in, from
// $POLYFN_HOME or else the running executable's location. It looks once
// per process.
func Locate() Home {
	homeOnce.Do(func() {
		if dir := os.Getenv(HomeEnv); dir != "" {
			if abs, err := filepath.Abs(dir); err == nil {
				home = At(abs)
				return
			}
		}
		exe, err := os.Executable()
		if err == nil {
			exe, err = filepath.EvalSymlinks(exe)
		}
		if err != nil {
			home = Home{Layout: PathOnly}
			return
		}
		home = At(filepath.Dir(filepath.Dir(exe)))
	})
	return home
}

// At returns the layout of root, the directory above the one holding the
// polyfn executable.
func At(root string) Home {
	if isDir(filepath.Join(root, LibDir)) {
		return Home{Layout: Installed, Root: root}
	}
	if isFile(filepath.Join(root, "go.mod")) && isDir(filepath.Join(root, "runtimes", "python")) && isDir(filepath.Join(root, "sdk", "go")) {
		return Home{Layout: Checkout, Root: root}
	}
	return Home{Layout: PathOnly}
}

// fix is the command that installs or rebuilds the runtimes of h.
func (h Home) fix() string {
	switch h.Layout {
	case Installed:
		return fmt.Sprintf("make install PREFIX=%s (in a polyfn checkout)", h.Root)
	case Checkout:
		return fmt.Sprintf("make -C %s runtimes", h.Root)
	}
	return "make install PREFIX=$HOME/.local (in a polyfn checkout), then run PREFIX/bin/polyfn"
}

// Python returns where h's Python runtime is.
func (h Home) Python() Runtime {
	r := Runtime{Name: Python, Layout: h.Layout, Fix: h.fix()}
	switch h.Layout {
	case Installed:
		r.Dir = filepath.Join(h.Root, LibDir, "python")
	case Checkout:
		r.Dir = filepath.Join(h.Root, ".venv")
	default:
		// Looked up when a worker (or Probe) starts: locating stays a few
		// stats, cheap enough for every config load.
		r.Interpreter = "python3"
	}
	if r.Dir != "" {
		r.Interpreter = filepath.Join(r.Dir, "bin", "python")
		if _, err := os.Stat(r.Interpreter); err != nil {
			r.Err = fmt.Errorf("the Python runtime's virtualenv is missing: %w", err)
		}
	}
	r.Command = []string{r.Interpreter, "-m", "polyfn_runtime"}
	r.CallCommand = []string{r.Interpreter, "-m", "polyfn_runtime", "-c", "{config}"}
	return r
}

// NodeFlags are the V8 flags polyfn's Node.js runtime starts with, the same
// as in the shebang line of its bin/polyfn-node.js (which applies when it
// is run as polyfn-node from PATH): a young generation of at most 2 MiB per
// semi-space (V8 grows it to 16 MiB under a burst and keeps it), and one
// background thread for V8 instead of four (docs/performance.md, "Node.js").
var NodeFlags = []string{"--max-semi-space-size=2", "--v8-pool-size=1"}

// Node returns where h's Node.js runtime is. The node program is the one
// on PATH, else one in a usual place (/usr/local/bin, /usr/bin).
func (h Home) Node() Runtime {
	r := Runtime{Name: Node, Layout: h.Layout, Fix: h.fix()}
	switch h.Layout {
	case Installed:
		r.Dir = filepath.Join(h.Root, LibDir, "node")
	case Checkout:
		r.Dir = filepath.Join(h.Root, "runtimes", "node")
	default:
		r.Interpreter = "node"
		r.Command = []string{"polyfn-node"}
		r.CallCommand = []string{"polyfn-node", "-c", "{config}"}
		return r
	}
	r.Interpreter = findProgram("node", "/usr/local/bin/node", "/usr/bin/node")
	script := filepath.Join(r.Dir, "bin", "polyfn-node.js")
	r.Command = append(append([]string{r.Interpreter}, NodeFlags...), script)
	r.CallCommand = append(append([]string{r.Interpreter}, NodeFlags...), script, "-c", "{config}")
	switch {
	case !isFile(script):
		r.Err = fmt.Errorf("the Node.js runtime is missing: no %s", script)
	case !isDir(filepath.Join(r.Dir, "node_modules", "@grpc", "grpc-js")):
		r.Err = fmt.Errorf("the Node.js runtime's packages are missing: no %s", filepath.Join(r.Dir, "node_modules"))
	case !filepath.IsAbs(r.Interpreter):
		r.Err = errors.New("no node program on PATH, in /usr/local/bin or in /usr/bin; install Node.js 20 or later")
		r.Fix = "install Node.js 20 or later (https://nodejs.org), or name it in runtimes.node.command"
	}
	return r
}

// GoSDK returns the directories of the Go SDK's module
// (github.com/polyfn/polyfn/sdk/go) and of the protocol module it requires
// (github.com/polyfn/polyfn/api), or empty strings when h carries none.
func (h Home) GoSDK() (sdk, api string) {
	switch h.Layout {
	case Installed:
		sdk, api = filepath.Join(h.Root, LibDir, "go", "sdk"), filepath.Join(h.Root, LibDir, "go", "api")
	case Checkout:
		sdk, api = filepath.Join(h.Root, "sdk", "go"), filepath.Join(h.Root, "api")
	default:
		return "", ""
	}
	if !isFile(filepath.Join(sdk, "go.mod")) || !isFile(filepath.Join(api, "go.mod")) {
		return "", ""
	}
	return sdk, api
}

// GoTool returns the go command Go functions are built with: the one on
// PATH, else $GOROOT/bin/go, else one in a usual place (/usr/local/go,
// /usr/lib/go). It returns "go" when there is none, so that running it
// fails with the usual error.
func GoTool() string {
	var more []string
	if g := os.Getenv("GOROOT"); g != "" {
		more = append(more, filepath.Join(g, "bin", "go"))
	}
	more = append(more, "/usr/local/go/bin/go", "/usr/lib/go/bin/go")
	return findProgram("go", more...)
}

// findProgram looks name up on PATH, then tries each of more in turn. It
// returns name itself when none is there.
func findProgram(name string, more ...string) string {
	if p, err := exec.LookPath(name); err == nil {
		if abs, err := filepath.Abs(p); err == nil {
			return abs
		}
		return p
	}
	for _, p := range more {
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p
		}
	}
	return name
}

// Info is what a probe of a runtime found.
type Info struct {
	// Version is the runtime's own version (polyfn-runtime's).
	Version string
	// Interpreter is the interpreter's version (Python 3.11.2, Node.js v20.1.0).
	Interpreter string
	// Where is the runtime's code: the polyfn_runtime package's directory,
	// the Node.js runtime's.
	Where string
}

// probePython prints the interpreter's version and where polyfn_runtime
// is, without importing it (which is slower); it exits 3 when it is not
// installed. The runtime's version is read from its __init__.py.
const probePython = `import sys, importlib.util as u
s = u.find_spec("polyfn_runtime")
if s is None:
    sys.exit(3)
print(sys.version.split()[0])
print(list(s.submodule_search_locations or [s.origin])[0])
`

var pyVersionRE = regexp.MustCompile(`(?m)^__version__\s*=\s*["']([^"']+)["']`)

// Probe starts r's interpreter once to check that the runtime is there and
// reads its versions. The error names the fix.
func Probe(ctx context.Context, r Runtime) (Info, error) {
	if r.Err != nil {
		return Info{}, r.problem(r.Err)
	}
	ctx, cancel := context.WithTimeout(ctx, ProbeTimeout)
	defer cancel()
	switch r.Name {
	case Python:
		out, err := exec.CommandContext(ctx, r.Interpreter, "-E", "-c", probePython).Output()
		var ee *exec.ExitError
		switch {
		case errors.As(err, &ee) && ee.ExitCode() == 3:
			return Info{}, r.problem(fmt.Errorf("%s cannot import polyfn_runtime", r.Interpreter))
		case err != nil:
			return Info{}, r.problem(fmt.Errorf("%s does not start: %w%s", r.Interpreter, err, stderrOf(err)))
		}
		f := strings.Split(strings.TrimSpace(string(out)), "\n")
		if len(f) != 2 {
			return Info{}, r.problem(fmt.Errorf("%s: unexpected answer %q", r.Interpreter, out))
		}
		info := Info{Version: "unknown", Interpreter: "Python " + f[0], Where: f[1]}
		if data, err := os.ReadFile(filepath.Join(info.Where, "__init__.py")); err == nil {
			if m := pyVersionRE.FindSubmatch(data); m != nil {
				info.Version = string(m[1])
			}
		}
		return info, nil
	case Node:
		if r.Layout == PathOnly {
			p, err := exec.LookPath("polyfn-node")
			if err != nil {
				return Info{}, r.problem(fmt.Errorf("no polyfn-node on PATH: %w", err))
			}
			if real, err := filepath.EvalSymlinks(p); err == nil {
				r.Dir = filepath.Dir(filepath.Dir(real))
			}
		}
		node := r.Interpreter
		out, err := exec.CommandContext(ctx, node, "--version").Output()
		if err != nil {
			return Info{}, r.problem(fmt.Errorf("%s does not start: %w%s", node, err, stderrOf(err)))
		}
		info := Info{Version: "unknown", Interpreter: "Node.js " + strings.TrimSpace(string(out)), Where: r.Dir}
		if r.Dir != "" {
			var pkg struct{ Version string }
			if data, err := os.ReadFile(filepath.Join(r.Dir, "package.json")); err == nil && json.Unmarshal(data, &pkg) == nil && pkg.Version != "" {
				info.Version = pkg.Version
			}
		}
		return info, nil
	}
	return Info{}, fmt.Errorf("runtime %s: not a runtime polyfn carries", r.Name)
}

func (r Runtime) problem(err error) error {
	return fmt.Errorf("runtime %s (%s layout): %w; to fix it, run: %s", r.Name, r.Layout, err, r.Fix)
}

func stderrOf(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) && len(ee.Stderr) > 0 {
		sc := bufio.NewScanner(strings.NewReader(string(ee.Stderr)))
		last := ""
		for sc.Scan() {
			if t := strings.TrimSpace(sc.Text()); t != "" {
				last = t
			}
		}
		return ": " + last
	}
	return ""
}

func isDir(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}

func isFile(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}
