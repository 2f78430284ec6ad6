package e2e

import (
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/polyfn/polyfn/internal/hosttest"
)

// A Go function that does not compile is broken: its invocations fail with
// BuildFailed and the compiler's output; the host keeps serving the others.
func TestGoCompileErrorIsReported(t *testing.T) {
	dir := tempDir(t)
	writeFile(t, filepath.Join(dir, "go.mod"), "module example.com/broken\n\ngo 1.22\n")
	writeFile(t, filepath.Join(dir, "main.go"), "package main\n\nfunc main() { nope() }\n")
	th := hosttest.Start(t, testdata(t), `
functions:
  - {name: broken, runtime: go, codedir: "`+dir+`"}
  - {name: echo, runtime: go, codedir: functions/go-kinds}
`)
	r := th.Call(t, "broken", "")
	if r.Status != http.StatusBadGateway || r.Err.Error.Type != "BuildFailed" || !strings.Contains(r.Err.Error.Message, "undefined: nope") || !strings.Contains(r.Err.Error.Message, "main.go:3") {
		t.Fatalf("got %d %+v, want 502 BuildFailed with the compiler's message", r.Status, r.Err)
	}
	if r := th.Call(t, "echo", `{"ok": true}`); r.Status != 200 || !sameJSON(r.Body, []byte(`{"ok": true}`)) {
		t.Fatalf("echo: got %d %s", r.Status, r.Body)
	}
}

// A Go function's handler may name a prebuilt binary instead of a package
// for the host to build.
func TestGoPrebuiltBinary(t *testing.T) {
	dir := tempDir(t)
	if out, err := exec.Command("go", "build", "-o", filepath.Join(dir, "fn"), "./testdata/functions/go-kinds").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	th := hosttest.Start(t, testdata(t), `
functions:
  - {name: echo, runtime: go, handler: fn, codedir: "`+dir+`"}
  - {name: fail, runtime: go, handler: fn, codedir: "`+dir+`", protocol: call}
`)
	if r := th.Call(t, "echo", `{"prebuilt": 1}`); r.Status != 200 || !sameJSON(r.Body, []byte(`{"prebuilt": 1}`)) {
		t.Fatalf("echo: got %d %s", r.Status, r.Body)
	}
	if r := th.Call(t, "fail", `{"why": "prebuilt"}`); r.Status != 500 || r.Err.Error.Message != "bad input: prebuilt" {
		t.Fatalf("fail over the call protocol: got %d %+v", r.Status, r.Err)
	}
}
