package e2e

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/polyfn/polyfn/internal/hosttest"
)

// update rewrites the golden files from what the commands print:
//
//	go test ./e2e -run Golden -update
//
// then read the diff (git diff e2e/testdata/golden) before committing it.
var update = flag.Bool("update", false, "rewrite e2e/testdata/golden/*.golden from the output")

// golden compares a command's exit code and output with
// testdata/golden/NAME.golden, or rewrites that file under -update.
func golden(t *testing.T, name string, code int, stdout, stderr string) {
	t.Helper()
	got := fmt.Sprintf("exit %d\n-- stdout --\n%s-- stderr --\n%s", code, stdout, stderr)
	// Absolute paths differ from one checkout to the next.
	if wd, err := os.Getwd(); err == nil {
		got = strings.ReplaceAll(got, wd, "$E2E")
	}
	path := filepath.Join("testdata", "golden", name+".golden")
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (go test ./e2e -run %s -update writes it)", err, t.Name())
	}
	if got != string(want) {
		t.Errorf("%s differs from the output (go test ./e2e -run '%s' -update rewrites it):\n%s", path, t.Name(), lineDiff(string(want), got))
	}
}

// lineDiff shows the lines of want and got that differ, by position.
func lineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var b strings.Builder
	for i := 0; i < len(w) || i < len(g); i++ {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			fmt.Fprintf(&b, "line %d:\n  want %q\n  got  %q\n", i+1, wl, gl)
		}
	}
	return b.String()
}

// TestGoldenHelp: the command line's own text.
func TestGoldenHelp(t *testing.T) {
	for name, args := range map[string][]string{
		"help":          {"--help"},
		"help-invoke":   {"invoke", "--help"},
		"help-status":   {"status", "--help"},
		"help-validate": {"validate", "--help"},
		"usage-invoke":  {"invoke"},
		"usage-unknown": {"frobnicate"},
	} {
		t.Run(name, func(t *testing.T) {
			code, out, errOut := runCLI(args...)
			golden(t, name, code, out, errOut)
		})
	}
}

// TestGoldenValidate: every config under testdata/golden/validate gives
// exactly the errors (file:line:column: key: message) of its golden file.
func TestGoldenValidate(t *testing.T) {
	configs, err := filepath.Glob(filepath.Join("testdata", "golden", "validate", "*.yaml"))
	if err != nil || len(configs) == 0 {
		t.Fatalf("no configs under testdata/golden/validate: %v", err)
	}
	for _, cfg := range configs {
		name := strings.TrimSuffix(filepath.Base(cfg), ".yaml")
		t.Run(name, func(t *testing.T) {
			code, out, errOut := runCLI("validate", "-c", cfg)
			golden(t, filepath.Join("validate", name), code, out, errOut)
		})
	}
}

// TestGoldenStatus: polyfn status of a real host with a function never
// called, one that answered and one whose last invocation failed.
func TestGoldenStatus(t *testing.T) {
	requirePython(t)
	th := hosttest.Start(t, testdata(t), pythonRuntimes["stream"]+`
functions:
  - {name: echo, handler: index.echo, codedir: functions/kinds}
  - {name: fail, handler: index.fail, codedir: functions/kinds}
  - {name: never, handler: index.echo, codedir: functions/kinds}
`)
	if r := th.Call(t, "echo", `{"a": 1}`); r.Status != 200 {
		t.Fatalf("echo: %d %s", r.Status, r.Body)
	}
	if r := th.Call(t, "fail", `{"why": "golden"}`); r.Status != 500 {
		t.Fatalf("fail: %d %s", r.Status, r.Body)
	}
	// An instance turns idle once the response is on its way: wait for it.
	hosttest.WaitFor(t, 5*time.Second, "every instance idle", func() bool {
		for _, f := range th.Status() {
			if f.InFlight != 0 {
				return false
			}
			for _, i := range f.Instances {
				if i.State != "idle" {
					return false
				}
			}
		}
		return true
	})
	code, out, errOut := runCLI("status", "--url", th.URL)
	golden(t, "status", code, out, errOut)

	// A host that is not there: the error names what was asked.
	addr := hosttest.FreeAddr(t)
	code, out, errOut = runCLI("status", "--url", "http://"+addr)
	golden(t, "status-unreachable", code, out, regexp.MustCompile(regexp.QuoteMeta(addr)).ReplaceAllString(errOut, "ADDR"))
}
