package e2e

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/polyfn/polyfn/internal/hosttest"
)

// depsFunctions writes functions with dependencies from the real
// registries (PyPI, npm, the Go module proxy) under dir and returns their
// config entries.
func depsFunctions(t *testing.T, dir string) string {
	t.Helper()
	// Python: a small pure-Python package from PyPI.
	writeFileAll(t, filepath.Join(dir, "py", "requirements.txt"), "# a comment\nsix==1.16.0\n")
	writeFileAll(t, filepath.Join(dir, "py", "main.py"), "import six\n\n\ndef handler(event, context):\n    return {\"six\": six.__version__}\n")
	// Node.js: the same package.json for an ES module and a CommonJS function
	// (one cached environment for both).
	pkg := `{"name": "fn", "version": "1.0.0", "dependencies": {"is-odd": "3.0.1"}}`
	writeFileAll(t, filepath.Join(dir, "esm", "package.json"), pkg)
	writeFileAll(t, filepath.Join(dir, "esm", "index.mjs"), "import isOdd from 'is-odd';\nexport const handler = async (event) => ({ odd: isOdd(event.n) });\n")
	writeFileAll(t, filepath.Join(dir, "cjs", "package.json"), pkg)
	writeFileAll(t, filepath.Join(dir, "cjs", "index.js"), "const isOdd = require('is-odd');\nexports.handler = async (event) => ({ odd: isOdd(event.n) });\n")
	// Go: a third-party module through the module proxy, in a module of
	// its own outside this repository, requiring the SDK the host carries
	// (no replace: the host supplies it when it builds).
	gofn := filepath.Join(dir, "gofn")
	writeFileAll(t, filepath.Join(gofn, "go.mod"), "module example.com/gofn\n\ngo 1.26\n\nrequire (\n\tgithub.com/google/shlex v0.0.0-20191202100458-e7afc7fbc510\n\tgithub.com/polyfn/polyfn/sdk/go v0.0.0\n)\n")
	writeFileAll(t, filepath.Join(gofn, "main.go"), `package main

import (
	"context"

	"github.com/google/shlex"
	polyfn "github.com/polyfn/polyfn/sdk/go"
)

func main() {
	polyfn.Start(func(ctx context.Context, event polyfn.Event) (any, error) {
		return shlex.Split("a 'b c'")
	})
}
`)
	hosttest.Reachable(t, gofn)
	return `
  - {name: py, runtime: python3, handler: main.handler, codedir: ` + filepath.Join(dir, "py") + `}
  - {name: py-call, runtime: python3, protocol: call, handler: main.handler, codedir: ` + filepath.Join(dir, "py") + `}
  - {name: esm, runtime: node, handler: index.handler, codedir: ` + filepath.Join(dir, "esm") + `}
  - {name: cjs, runtime: node, handler: index.handler, codedir: ` + filepath.Join(dir, "cjs") + `}
  - {name: gofn, runtime: go, codedir: ` + gofn + `}
`
}

// Functions with dependencies from the real registries serve; a
// requirement that does not exist and a pin that contradicts the runtime's
// own protobuf each break only their function, with 502 BuildFailed naming
// it and the command; a second start runs no installer.
func TestFunctionDependencies(t *testing.T) {
	requirePython(t)
	dir := tempDir(t)
	state := filepath.Join(dir, "state")
	good := depsFunctions(t, dir)
	writeFileAll(t, filepath.Join(dir, "bad", "requirements.txt"), "polyfn-no-such-package-e2e==1.0\n")
	writeFileAll(t, filepath.Join(dir, "bad", "main.py"), "def handler(event, context):\n    return 1\n")
	writeFileAll(t, filepath.Join(dir, "proto", "requirements.txt"), "protobuf==3.20.3\n")
	writeFileAll(t, filepath.Join(dir, "proto", "main.py"), "def handler(event, context):\n    return 1\n")
	hosttest.Reachable(t, dir)
	cfg := "state_dir: " + state + "\nfunctions:" + good + `
  - {name: bad, runtime: python3, handler: main.handler, codedir: ` + filepath.Join(dir, "bad") + `}
  - {name: proto, runtime: python3, handler: main.handler, codedir: ` + filepath.Join(dir, "proto") + `}
`
	th := hosttest.Start(t, dir, cfg)
	// The standby worker serves a function with dependencies too: bind it.
	hosttest.WaitFor(t, 60*time.Second, "the python3 standby worker", func() bool {
		for _, s := range th.Standbys() {
			if s.Runtime == "python3" && s.Ready {
				return true
			}
		}
		return false
	})
	checkDeps(t, th)
	if !strings.Contains(th.Logs.String(), `msg="standby worker bound" function=py`) {
		t.Errorf("the standby worker was not bound to py (a function with dependencies)")
	}
	for fn, want := range map[string]string{"bad": "polyfn-no-such-package-e2e", "proto": "protobuf==3.20.3"} {
		r := th.Call(t, fn, "")
		if r.Status != http.StatusBadGateway || r.Err.Error.Type != "BuildFailed" ||
			!strings.Contains(r.Err.Error.Message, "function "+fn) || !strings.Contains(r.Err.Error.Message, "pip install") ||
			!strings.Contains(r.Err.Error.Message, want) {
			t.Errorf("%s: got %d %+v; want 502 BuildFailed naming the function, the command and %q", fn, r.Status, r.Err, want)
		}
	}
	for _, st := range th.Status() {
		broken := st.Name == "bad" || st.Name == "proto"
		if broken != (st.State == "broken") || broken && !strings.Contains(st.LastError, "pip install") {
			t.Errorf("status of %s: %q %q", st.Name, st.State, st.LastError)
		}
	}
	if !strings.Contains(th.Logs.String(), "the requirements name packages the Python runtime itself uses (protobuf==") {
		t.Errorf("the protobuf conflict is not named in the log")
	}
	// The two Node.js functions share one environment.
	esm, _ := os.Readlink(filepath.Join(dir, "esm", "node_modules"))
	cjs, _ := os.Readlink(filepath.Join(dir, "cjs", "node_modules"))
	if esm == "" || esm != cjs || !strings.HasPrefix(esm, state) {
		t.Errorf("node_modules links: %q and %q; want one entry under %s", esm, cjs, state)
	}
	th.Close(context.Background())

	// Again with the good functions: everything comes from the cache.
	th = hosttest.Start(t, dir, "state_dir: "+state+"\nfunctions:"+good)
	if !strings.Contains(th.Logs.String(), "installers_run=0") {
		t.Errorf("the second start ran an installer:\n%s", th.Logs.String())
	}
	checkDeps(t, th)
}

func checkDeps(t *testing.T, th *hosttest.Host) {
	t.Helper()
	for fn, want := range map[string]string{
		"py":      `{"six": "1.16.0"}`,
		"py-call": `{"six": "1.16.0"}`,
		"esm":     `{"odd": true}`,
		"cjs":     `{"odd": true}`,
		"gofn":    `["a", "b c"]`,
	} {
		if r := th.Call(t, fn, `{"n": 3}`); r.Status != 200 || !sameJSON(r.Body, []byte(want)) {
			t.Errorf("%s: got %d %s %+v; want %s", fn, r.Status, r.Body, r.Err, want)
		}
	}
}

// validate loads every function without serving it and names the file
// and line of what is wrong.
func TestValidateLoadsFunctions(t *testing.T) {
	requirePython(t)
	dir := tempDir(t)
	writeFileAll(t, filepath.Join(dir, "typo", "main.py"), "def handler(event, context):\n    return 1\n")
	writeFileAll(t, filepath.Join(dir, "syntax", "main.py"), "def handler(event, context):\n    return (\n")
	writeFileAll(t, filepath.Join(dir, "noexport", "index.js"), "exports.other = async () => 1;\n")
	writeFileAll(t, filepath.Join(dir, "gobad", "go.mod"), "module example.com/gobad\n\ngo 1.22\n")
	writeFileAll(t, filepath.Join(dir, "gobad", "main.go"), "package main\n\nfunc main() {\n\tnope()\n}\n")
	writeFileAll(t, filepath.Join(dir, "fine", "main.py"), "def handler(event, context):\n    return 1\n")
	file := filepath.Join(dir, "polyfn.yaml")
	writeFileAll(t, file, "state_dir: "+filepath.Join(dir, "state")+`
functions:
  - {name: typo, runtime: python3, handler: main.handlr, codedir: typo}
  - {name: syntax, runtime: python3, handler: main.handler, codedir: syntax}
  - {name: noexport, runtime: node, handler: index.handler, codedir: noexport}
  - {name: gobad, runtime: go, codedir: gobad}
  - {name: fine, runtime: python3, handler: main.handler, codedir: fine}
`)
	code, _, errOut := runCLI("validate", "-c", file)
	if code != 1 {
		t.Errorf("validate: exit %d, want 1", code)
	}
	for _, want := range []string{
		"function typo: " + filepath.Join(dir, "typo", "main.py") + ": module 'main' has no attribute 'handlr'",
		"function syntax: " + filepath.Join(dir, "syntax", "main.py") + ":2: ",
		"function noexport: " + filepath.Join(dir, "noexport", "index.js") + ": module 'index'",
		"has no export 'handler'",
		filepath.Join(dir, "gobad", "main.go") + ":4:2: undefined: nope",
		"4 functions do not load",
	} {
		if !strings.Contains(errOut, want) {
			t.Errorf("validate output lacks %q:\n%s", want, errOut)
		}
	}
	if strings.Contains(errOut, "function fine") {
		t.Errorf("validate reported a function that loads:\n%s", errOut)
	}
}

// writeFileAll writes path, making its directory (readable by every user).
func writeFileAll(t *testing.T, path, text string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, path, text)
}

// polyfn build builds ahead of time, says what it did per function, finds
// everything in the cache the second time and exits 1 if a build failed.
func TestBuildCommand(t *testing.T) {
	requirePython(t)
	dir := tempDir(t)
	writeFileAll(t, filepath.Join(dir, "py", "requirements.txt"), "six==1.16.0\n")
	writeFileAll(t, filepath.Join(dir, "py", "main.py"), "import six\n\n\ndef handler(event, context):\n    return 1\n")
	writeFileAll(t, filepath.Join(dir, "nd", "package.json"), `{"dependencies": {`)
	writeFileAll(t, filepath.Join(dir, "nd", "index.js"), "exports.handler = async () => 1;\n")
	good := filepath.Join(dir, "good.yaml")
	writeFile(t, good, "state_dir: state\nfunctions:\n  - {name: py, runtime: python3, handler: main.handler, codedir: py}\n")
	code, out, errOut := runCLI("build", "-c", good)
	if code != 0 || !regexpMatch(`(?m)^py +python +built in `, out) {
		t.Fatalf("first build: exit %d, %q %q", code, out, errOut)
	}
	code, out, errOut = runCLI("build", "-c", good)
	if code != 0 || !regexpMatch(`(?m)^py +python +cached$`, out) {
		t.Fatalf("second build: exit %d, %q %q; want py cached", code, out, errOut)
	}
	bad := filepath.Join(dir, "bad.yaml")
	writeFile(t, bad, "state_dir: state\nfunctions:\n  - {name: py, runtime: python3, handler: main.handler, codedir: py}\n  - {name: nd, runtime: node, handler: index.handler, codedir: nd}\n")
	code, out, errOut = runCLI("build", "-c", bad)
	if code != 1 || !regexpMatch(`(?m)^nd +node +FAILED`, out) || !strings.Contains(errOut, "function nd: build failed: read "+filepath.Join(dir, "nd", "package.json")+": package.json is not valid JSON") {
		t.Fatalf("build with a broken package.json: exit %d, %q %q", code, out, errOut)
	}
}

func regexpMatch(re, s string) bool { return regexp.MustCompile(re).MatchString(s) }
