// Package install tests the installed layout end to end: make install into
// a temporary PREFIX, then the installed polyfn with a PATH of system
// directories only. It is a package of its own so that its minute of make
// install runs beside the other end-to-end tests, not within their time.
package install

import (
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/polyfn/polyfn/internal/hosttest"
	"github.com/polyfn/polyfn/internal/runtimes"
)

// tempDir is a temporary directory the workers' users can reach.
func tempDir(t *testing.T) string {
	t.Helper()
	d := t.TempDir()
	hosttest.Reachable(t, d)
	return d
}

// serveEnv runs `bin serve -c cfg` with env until the test ends, and
// returns its base URL once it answers /healthz.
func serveEnv(t *testing.T, bin, cfg string, env []string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	cmd := exec.Command(bin, "serve", "-c", cfg, "--listen", addr, "--mqtt-listen", "127.0.0.1:0", "--state-dir", tempDir(t)) // workers of other users read the builds
	logs := &hosttest.SyncBuffer{}
	cmd.Env, cmd.Stdout, cmd.Stderr = env, logs, logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // anything left in its group
		if t.Failed() {
			t.Logf("polyfn output:\n%s", logs.String())
		}
	})
	base := "http://" + addr
	hosttest.WaitFor(t, 60*time.Second, "polyfn to answer /healthz", func() bool {
		resp, err := http.Get(base + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	return base
}

// post invokes fn with body and returns the status and the body.
func post(base, fn, body string) (int, string, error) {
	resp, err := http.Post(base+"/function/"+fn, "application/json", strings.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// systemEnv is the test's environment with a PATH of system directories
// only: none of the Makefile's (bin/, .venv/bin), nor the go command's.
func systemEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PATH=") && !strings.HasPrefix(kv, "GOPROXY=") {
			env = append(env, kv)
		}
	}
	return append(append(env, "PATH=/usr/bin:/bin"), extra...)
}

// goProxy is the test's GOPROXY setting, if it has one.
func goProxy() []string {
	if p, ok := os.LookupEnv("GOPROXY"); ok {
		return []string{"GOPROXY=" + p}
	}
	return nil
}

// write writes a file of the test's project.
func write(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

// run runs argv in dir with env and fails the test unless it exits 0.
func run(t *testing.T, dir string, env []string, argv ...string) string {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir, cmd.Env = dir, env
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s (in %s): %v\n%s", strings.Join(argv, " "), dir, err, out)
	}
	return string(out)
}

// The installed layout, as a new user would use it: make install into a
// temporary PREFIX; then, with a PATH of system directories only and the
// Go module proxy off (nothing of polyfn's may come from the network),
// the installed polyfn reports its runtimes, serves the examples, and in
// a directory outside the repository writes a project with init and a
// function of each runtime with new, whose generated tests pass and which
// it serves. Last, a runtime taken away is reported by validate with the
// command that puts it back.
func TestInstalledLayout(t *testing.T) {
	if testing.Short() {
		t.Skip("make install takes a minute")
	}
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	prefix := filepath.Join(tempDir(t), "prefix")
	// The Dockerfile's command (image_test.go), into a temporary prefix.
	run(t, repo, os.Environ(), "make", "--no-print-directory", "install", "PREFIX="+prefix, "TAGS=kubernetes")
	// The SDK's third-party dependencies come through the environment's
	// module proxy, before it is switched off for the rest.
	run(t, filepath.Join(repo, "sdk", "go"), os.Environ(), runtimes.GoTool(), "mod", "download")
	bin := filepath.Join(prefix, "bin", "polyfn")
	env := systemEnv("GOPROXY=off")
	// Functions' Python dependencies are installed with the uv installed
	// beside the runtime's interpreter (pip, several times slower, without).
	if _, err := os.Stat(filepath.Join(prefix, "lib", "polyfn", "python", "bin", "uv")); err != nil {
		t.Errorf("make install left out uv: %v", err)
	}

	out := run(t, "/", env, bin, "version")
	for _, want := range []string{
		"layout: installed (" + prefix + ")",
		"python3: polyfn-runtime 0.1.0, Python 3",
		filepath.Join(prefix, "lib/polyfn/python/bin/python"),
		"node: polyfn-runtime 0.1.0, Node.js v",
		"SDK at " + filepath.Join(prefix, "lib/polyfn/go/sdk"),
	} {
		if !strings.Contains(out, want) {
			t.Errorf("polyfn version lacks %q:\n%s", want, out)
		}
	}

	t.Run("examples", func(t *testing.T) {
		base := serveEnv(t, bin, filepath.Join(repo, "examples", "polyfn.yaml"), env)
		for _, fn := range []string{"sayhi", "hello-node", "hello-go"} {
			status, body, err := post(base, fn, `{"name":"polyfn"}`)
			if err != nil || status != 200 || !strings.Contains(body, "Hello, polyfn!") {
				t.Errorf("%s: got %d %s (%v)", fn, status, body, err)
			}
		}
	})

	t.Run("image", func(t *testing.T) { testImage(t, repo, prefix) })

	proj := filepath.Join(tempDir(t), "project")
	t.Run("init and new", func(t *testing.T) {
		run(t, "/", env, bin, "init", proj)
		tests := map[string][]string{
			// pytest is not part of the runtime: the checkout's .venv has it.
			"python3": {filepath.Join(repo, ".venv", "bin", "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider"},
			"node":    {"node", "--test"},
			"go":      {runtimes.GoTool(), "test", "./..."},
		}
		for rt, test := range tests {
			name := "hello-" + strings.TrimSuffix(rt, "3")
			run(t, proj, env, bin, "new", name, "--runtime", rt)
			run(t, filepath.Join(proj, "functions", name), env, test...)
		}
		run(t, proj, env, bin, "validate")
		base := serveEnv(t, bin, filepath.Join(proj, "polyfn.yaml"), env)
		for _, fn := range []string{"hello-python", "hello-node", "hello-go"} {
			status, body, err := post(base, fn, `{"name":"polyfn"}`)
			if err != nil || status != 200 || !strings.Contains(body, `Hello, polyfn!`) {
				t.Errorf("%s: got %d %s (%v)", fn, status, body, err)
			}
		}
	})

	// The project's functions, each given a third-party dependency the way
	// docs/functions.md says: requests in requirements.txt, an npm package
	// in package.json, a module imported by the Go function. The installed
	// polyfn builds them (PyPI, npm and the environment's Go module proxy)
	// and serves them, each using its dependency.
	t.Run("dependencies", func(t *testing.T) {
		if _, err := os.Stat(filepath.Join(proj, "functions", "hello-go", "go.mod")); err != nil {
			t.Skip("no project: init and new failed")
		}
		fns := filepath.Join(proj, "functions")
		write(t, filepath.Join(fns, "hello-python", "requirements.txt"), "requests\n")
		write(t, filepath.Join(fns, "hello-python", "main.py"), `import requests


def handler(event, context):
    req = requests.Request("GET", "http://example.invalid/greet", params={"name": event["name"]}).prepare()
    return {"url": req.url, "requests": requests.__version__}
`)
		pkg := filepath.Join(fns, "hello-node", "package.json")
		b, err := os.ReadFile(pkg)
		if err != nil {
			t.Fatal(err)
		}
		write(t, pkg, strings.Replace(string(b), `"dependencies": {}`, `"dependencies": {"ms": "2.1.3"}`, 1))
		write(t, filepath.Join(fns, "hello-node", "index.js"), `'use strict';
const ms = require('ms');

exports.handler = async (event) => ({ twoDays: ms('2 days'), name: event.name });
`)
		write(t, filepath.Join(fns, "hello-go", "main.go"), `package main

import (
	"context"

	"github.com/google/shlex"
	polyfn "github.com/polyfn/polyfn/sdk/go"
)

func main() { polyfn.Start(handle) }

func handle(ctx context.Context, event polyfn.Event) (any, error) {
	var in struct{ Cmd string }
	if err := event.Decode(&in); err != nil {
		return nil, err
	}
	return shlex.Split(in.Cmd)
}
`)
		// The Go function's module gets the new requirement as a user's
		// would; the SDK still comes from the installed tree.
		denv := systemEnv(goProxy()...)
		run(t, filepath.Join(fns, "hello-go"), denv, runtimes.GoTool(), "mod", "tidy")
		base := serveEnv(t, bin, filepath.Join(proj, "polyfn.yaml"), denv)
		for _, c := range []struct{ fn, body, want string }{
			{"hello-python", `{"name":"polyfn"}`, `"url": "http://example.invalid/greet?name=polyfn"`},
			{"hello-node", `{"name":"polyfn"}`, `{"twoDays":172800000,"name":"polyfn"}`},
			{"hello-go", `{"cmd":"ls -l 'a b'"}`, `["ls","-l","a b"]`},
		} {
			status, body, err := post(base, c.fn, c.body)
			if err != nil || status != 200 || !strings.Contains(body, c.want) {
				t.Errorf("%s: got %d %s (%v), want a body with %s", c.fn, status, body, err, c.want)
			}
		}
	})

	t.Run("missing runtime", func(t *testing.T) {
		if _, err := os.Stat(filepath.Join(proj, "polyfn.yaml")); err != nil {
			t.Skip("no project: init and new failed")
		}
		mods := filepath.Join(prefix, "lib", "polyfn", "node", "node_modules")
		if err := os.Rename(mods, mods+".gone"); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, "validate")
		cmd.Dir, cmd.Env = proj, env
		out, err := cmd.CombinedOutput()
		if err == nil {
			t.Fatalf("validate exited 0 with the Node.js runtime's packages gone:\n%s", out)
		}
		for _, want := range []string{"hello-node", "runtime node", "make install PREFIX=" + prefix} {
			if !strings.Contains(string(out), want) {
				t.Errorf("validate's report lacks %q:\n%s", want, out)
			}
		}
	})
}
