package e2e

import (
	"bytes"
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

func testPythonRuntime(t *testing.T, protocol string, th *hosttest.Host) {

	t.Run("payload kinds", func(t *testing.T) {
		tests := []struct {
			name, body string
			wantBody   []byte
			wantType   string
		}{
			{"json object", `{"a": 1, "b": [true, null]}`, []byte(`{"a": 1, "b": [true, null]}`), "application/json"},
			{"json string", `"text"`, []byte(`"text"`), "application/json"},
			{"raw bytes", "\x00\x01not json\xff", []byte("\x00\x01not json\xff"), "application/octet-stream"},
			{"empty", "", []byte(`{}`), "application/json"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				r := th.Call(t, "echo", tt.body)
				if r.Status != 200 || !bytes.Equal(r.Body, tt.wantBody) || r.Header.Get("Content-Type") != tt.wantType {
					t.Fatalf("got %d %q (%s), want 200 %q (%s)", r.Status, r.Body, r.Header.Get("Content-Type"), tt.wantBody, tt.wantType)
				}
			})
		}
	})

	t.Run("return kinds", func(t *testing.T) {
		tests := []struct{ kind, want string }{
			{"none", ""},
			{"bytes", "\x00raw\xffbytes"},
			{"str", `"hello"`},
			{"dict", `{"kind": "dict", "n": [1, 2, 3]}`},
		}
		for _, tt := range tests {
			r := th.Call(t, "returns", `{"kind":"`+tt.kind+`"}`)
			if r.Status != 200 || string(r.Body) != tt.want {
				t.Errorf("return %s: got %d %q, want 200 %q", tt.kind, r.Status, r.Body, tt.want)
			}
		}
	})

	t.Run("HTTP response object", func(t *testing.T) {
		r := th.Call(t, "respond", `{"name": "x"}`)
		if r.Status != 201 || r.Header.Get("X-Kind") != "py" || string(r.Body) != `{"created": "x"}` || r.Header.Get("Content-Type") != "application/json" {
			t.Fatalf("got %d %v %q", r.Status, r.Header, r.Body)
		}
	})

	t.Run("async handler", func(t *testing.T) {
		r := th.Call(t, "async-echo", `{"x": 1}`)
		if want := map[string]any{"async": true, "event": map[string]any{"x": 1.0}}; r.Status != 200 || !reflect.DeepEqual(jsonOf(t, r.Body), want) {
			t.Fatalf("got %d %s", r.Status, r.Body)
		}
	})

	t.Run("context and environment", func(t *testing.T) {
		r := th.Do(t, http.MethodPut, "/function/ctx?q=1&q=2&z=x", []byte("{}"), http.Header{"X-Custom": {"yes"}})
		if r.Status != 200 {
			t.Fatalf("got %d %s", r.Status, r.Body)
		}
		var got struct {
			Context map[string]any     `json:"context"`
			Env     map[string]*string `json:"env"`
			Cwd     string             `json:"cwd"`
		}
		if err := json.Unmarshal(r.Body, &got); err != nil {
			t.Fatal(err)
		}
		id := r.Header.Get(httptrigger.InvocationIDHeader)
		c := got.Context
		for k, want := range map[string]any{"functionName": "ctx", "functionInvokeID": id, "invokeid": id, "messageQOS": 0.0, "messageTopic": "", "trigger": "http"} {
			if c[k] != want {
				t.Errorf("context[%q] = %#v, want %#v", k, c[k], want)
			}
		}
		if ts, ok := c["messageTimestamp"].(float64); !ok || ts < 1.7e9 {
			t.Errorf("context messageTimestamp = %#v, want unix seconds", c["messageTimestamp"])
		}
		if d, ok := c["deadline"].(string); !ok || !strings.Contains(d, "T") {
			t.Errorf("context deadline = %#v, want an RFC 3339 time", c["deadline"])
		}
		h, _ := c["http"].(map[string]any)
		if h["method"] != "PUT" || h["path"] != "/function/ctx" {
			t.Errorf("context http = %#v", h)
		}
		if q, _ := h["query"].(map[string]any); q["q"] != "1,2" || q["z"] != "x" {
			t.Errorf("context http.query = %#v", h["query"])
		}
		if hd, _ := h["headers"].(map[string]any); hd["x-custom"] != "yes" {
			t.Errorf("context http.headers = %#v, want lower-case x-custom", h["headers"])
		}
		env := got.Env
		if env["GREETING"] == nil || *env["GREETING"] != "hi" || env["RUNTIME_VAR"] == nil || *env["RUNTIME_VAR"] != "from-runtime" {
			t.Errorf("function and runtime env not passed: %v", got.Env)
		}
		if env["POLYFN_SECRET"] != nil {
			t.Errorf("host environment leaked into the worker: POLYFN_SECRET=%s", *env["POLYFN_SECRET"])
		}
		if protocol == "call" && (env["BAETYL_SERVICE_INSTANCE_NAME"] == nil || !strings.HasPrefix(*env["BAETYL_SERVICE_INSTANCE_NAME"], "ctx-")) {
			t.Errorf("BAETYL_SERVICE_INSTANCE_NAME = %v", env["BAETYL_SERVICE_INSTANCE_NAME"])
		}
		if protocol == "stream" && (env["FUNCTIONS_WORKER_DIRECTORY"] == nil || !strings.HasPrefix(*env["FUNCTIONS_WORKER_DIRECTORY"], th.RunDir())) {
			t.Errorf("FUNCTIONS_WORKER_DIRECTORY = %v", env["FUNCTIONS_WORKER_DIRECTORY"])
		}
		if !strings.HasPrefix(got.Cwd, th.RunDir()+"/") {
			t.Errorf("worker cwd %q is not a private directory under %s", got.Cwd, th.RunDir())
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
	r = th.Call(t, "ctx", "")
	var got struct {
		Context map[string]any `json:"context"`
	}
	if err := json.Unmarshal(r.Body, &got); err != nil || got.Context["functionName"] != "ctx" || got.Context["invokeid"] != r.Header.Get(httptrigger.InvocationIDHeader) {
		t.Fatalf("context: got %d %s", r.Status, r.Body)
	}
}
