package e2e

import (
	"encoding/json"
	"net/http"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/polyfn/polyfn/internal/hosttest"
	httptrigger "github.com/polyfn/polyfn/internal/trigger/http"
)

// requirePython fails the test when the Python runtime is not installed:
// the end-to-end tests are part of the suite, never silently skipped.
func requirePython(t *testing.T) {
	t.Helper()
	out, err := exec.Command("python3", "-c", "import polyfn_runtime, yaml").CombinedOutput()
	if err != nil {
		t.Fatalf("python3 on PATH cannot import polyfn_runtime (run `make venv` and put .venv/bin first on PATH, as `make test` does): %v\n%s", err, out)
	}
}

// tempDir is t.TempDir made readable by every user: workers run as users
// of their own (isolation.user auto) when the tests run as root.
func tempDir(t *testing.T) string {
	t.Helper()
	d := t.TempDir()
	hosttest.Reachable(t, d)
	return d
}

func testdata(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs("testdata")
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// pythonRuntimes declare polyfn's Python runtime in each protocol, with a
// runtime env variable the tests look for.
var pythonRuntimes = map[string]string{
	"call": `
runtimes:
  python3:
    protocol: call
    command: [python3, -m, polyfn_runtime, -c, "{config}"]
    address: unix
    env: {RUNTIME_VAR: from-runtime, PYTHONUNBUFFERED: "1"}
`,
	"stream": `
runtimes:
  python3:
    protocol: stream
    discovery: config
    command: [python3, -m, polyfn_runtime]
    env: {RUNTIME_VAR: from-runtime, PYTHONUNBUFFERED: "1"}
`,
}

const pythonConfig = `
http:
  max_body: 64Ki
functions:
  - {name: echo, handler: index.echo, codedir: functions/kinds}
  - {name: returns, handler: index.returns, codedir: functions/kinds}
  - {name: fail, handler: index.fail, codedir: functions/kinds}
  - {name: async-echo, handler: index.async_echo, codedir: functions/kinds}
  - {name: whoami, handler: index.whoami, codedir: functions/kinds}
  - {name: respond, handler: index.respond, codedir: functions/kinds}
  - {name: whoami2, handler: index.whoami, codedir: functions/kinds2}
  - name: ctx
    handler: ctx.handler
    codedir: functions/ctx
    env: {GREETING: hi}
`

func jsonOf(t *testing.T, b []byte) any {
	t.Helper()
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("not JSON: %q: %v", b, err)
	}
	return v
}

func TestPythonRuntime(t *testing.T) {
	requirePython(t)
	t.Setenv("POLYFN_SECRET", "must-not-reach-workers")
	for _, protocol := range []string{"call", "stream"} {
		t.Run(protocol, func(t *testing.T) {
			testPythonRuntime(t, protocol, hosttest.Start(t, testdata(t), pythonRuntimes[protocol]+pythonConfig))
		})
	}
}

// testPythonRuntime covers what is particular to the Python runtime; the
// semantic table shared by every language is in semantics_test.go.
func testPythonRuntime(t *testing.T, protocol string, th *hosttest.Host) {
	t.Run("async handler", func(t *testing.T) {
		r := th.Call(t, "async-echo", `{"x": 1}`)
		if want := map[string]any{"async": true, "event": map[string]any{"x": 1.0}}; r.Status != 200 || !reflect.DeepEqual(jsonOf(t, r.Body), want) {
			t.Fatalf("got %d %s", r.Status, r.Body)
		}
	})

	t.Run("exception", func(t *testing.T) {
		r := th.Call(t, "fail", `{"why": "testing"}`)
		if r.Status != 500 || r.Err.Error.Type != "ValueError" || r.Err.Error.Message != "bad input: testing" {
			t.Fatalf("got %d %+v, want 500 ValueError %q", r.Status, r.Err, "bad input: testing")
		}
		pid := pidOf(th, "fail")
		r = th.Call(t, "fail", `{"why": "again"}`)
		if r.Status != 500 || r.Err.Error.Message != "bad input: again" || pidOf(th, "fail") != pid {
			t.Fatalf("the worker must keep serving after an exception: got %d %+v", r.Status, r.Err)
		}
		hosttest.WaitFor(t, 5*time.Second, "the traceback in the host log", func() bool {
			return strings.Contains(th.Logs.String(), "ValueError") && strings.Contains(th.Logs.String(), "function=fail")
		})
	})

	t.Run("same module name in two functions", func(t *testing.T) {
		a, b := th.Call(t, "whoami", ""), th.Call(t, "whoami2", "")
		if string(a.Body) != `{"module": "kinds"}` || string(b.Body) != `{"module": "kinds2"}` {
			t.Fatalf("got %q and %q", a.Body, b.Body)
		}
	})

	t.Run("unknown function", func(t *testing.T) {
		r := th.Call(t, "missing", "")
		if r.Status != 404 || r.Err.Error.Type != "FunctionNotFound" {
			t.Fatalf("got %d %+v", r.Status, r.Err)
		}
	})

	t.Run("body over the limit", func(t *testing.T) {
		r := th.Call(t, "echo", strings.Repeat("x", 65<<10))
		if r.Status != http.StatusRequestEntityTooLarge || r.Err.Error.Type != "PayloadTooLarge" {
			t.Fatalf("got %d %+v", r.Status, r.Err)
		}
	})

	t.Run("concurrent invocations", func(t *testing.T) {
		var wg sync.WaitGroup
		for i := 0; i < 32; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				body := `{"i": ` + string(rune('0'+i%10)) + `}`
				if r := th.Call(t, "echo", body); r.Status != 200 || string(r.Body) != body {
					t.Errorf("got %d %q, want %q", r.Status, r.Body, body)
				}
			}()
		}
		wg.Wait()
	})
}

func pidOf(th *hosttest.Host, fn string) int {
	for _, f := range th.Status() {
		if f.Name == fn && len(f.Instances) > 0 {
			return f.Instances[0].Pid
		}
	}
	return 0
}

// A runtime polyfn did not write, following the Baetyl convention the way
// the original Baetyl Python runtime does, declared in config and run
// unmodified: TCP address, -c config file, its own error format.
func TestForeignBaetylRuntime(t *testing.T) {
	requirePython(t)
	dir := testdata(t)
	th := hosttest.Start(t, dir, `
runtimes:
  baetyl-python3:
    protocol: call
    command: [python3, "{dir}/baetyl-runtime/runtime.py", -c, "{config}"]
functions:
  - {name: echo, runtime: baetyl-python3, handler: index.echo, codedir: functions/kinds}
  - {name: fail, runtime: baetyl-python3, handler: index.fail, codedir: functions/kinds}
  - {name: fail-args, runtime: baetyl-python3, handler: index.fail_args, codedir: functions/kinds}
  - {name: ctx, runtime: baetyl-python3, handler: ctx.handler, codedir: functions/ctx}
`, "{dir}", dir)
	if r := th.Call(t, "echo", `{"hello": "baetyl"}`); r.Status != 200 || string(r.Body) != `{"hello": "baetyl"}` {
		t.Fatalf("echo: got %d %q", r.Status, r.Body)
	}
	if r := th.Call(t, "echo", ""); r.Status != 200 || string(r.Body) != `{}` {
		t.Fatalf("empty payload: got %d %q", r.Status, r.Body)
	}
	r := th.Call(t, "fail", `{"why": "foreign"}`)
	if r.Status != 500 || r.Err.Error.Type != "ValueError" || r.Err.Error.Message != "bad input: foreign" {
		t.Fatalf("exception: got %d %+v, want 500 ValueError", r.Status, r.Err)
	}
	// A body within http.max_body (6Mi) but above the runtime's gRPC
	// receive limit (grpc-python's default 4 MiB): 413 naming the limit.
	r = th.Call(t, "echo", strings.Repeat("x", 5<<20))
	if r.Status != http.StatusRequestEntityTooLarge || r.Err.Error.Type != "PayloadTooLarge" || !strings.Contains(r.Err.Error.Message, "4194304") {
		t.Fatalf("5 MiB body: got %d %+v, want 413 PayloadTooLarge naming the worker's 4194304-byte limit", r.Status, r.Err)
	}
	// The message is Python's str() of the exception, read from its repr.
	r = th.Call(t, "fail-args", `{"why": "it's \"quoted\"\nand (bracketed)"}`)
	if want := `('it\'s "quoted"\nand (bracketed)', 2)`; r.Status != 500 || r.Err.Error.Type != "ValueError" || r.Err.Error.Message != want {
		t.Fatalf("exception with two arguments: got %d %+v, want 500 ValueError %q", r.Status, r.Err, want)
	}
	r = th.Call(t, "ctx", "")
	var got struct {
		Context map[string]any `json:"context"`
	}
	if err := json.Unmarshal(r.Body, &got); err != nil || got.Context["functionName"] != "ctx" || got.Context["invokeid"] != r.Header.Get(httptrigger.InvocationIDHeader) {
		t.Fatalf("context: got %d %s", r.Status, r.Body)
	}
}
