package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/polyfn/polyfn/internal/hosttest"
	httptrigger "github.com/polyfn/polyfn/internal/trigger/http"
)

// languages maps each of polyfn's runtimes to its runtime declarations (one
// per protocol, with an env variable the tests look for) and its functions
// of the semantic table: echo, returns, fail, respond, ctx.
var languages = map[string]struct {
	runtimes  map[string]string
	functions string
}{
	"python": {
		runtimes: pythonRuntimes,
		functions: `
  - {name: echo, handler: index.echo, codedir: functions/kinds}
  - {name: returns, handler: index.returns, codedir: functions/kinds}
  - {name: fail, handler: index.fail, codedir: functions/kinds}
  - {name: respond, handler: index.respond, codedir: functions/kinds}
  - {name: slow, handler: index.slow, codedir: functions/kinds}
  - {name: ctx, handler: ctx.handler, codedir: functions/ctx, env: {GREETING: hi}}
`,
	},
	"node": {
		runtimes: map[string]string{
			"call": `
runtimes:
  node:
    protocol: call
    command: [polyfn-node, -c, "{config}"]
    address: unix
    env: {RUNTIME_VAR: from-runtime}
`,
			"stream": `
runtimes:
  node:
    protocol: stream
    discovery: config
    command: [polyfn-node]
    env: {RUNTIME_VAR: from-runtime}
`,
		},
		functions: `
  - {name: echo, runtime: node, handler: index.echo, codedir: functions/node-kinds}
  - {name: returns, runtime: node, handler: index.returns, codedir: functions/node-kinds}
  - {name: fail, runtime: node, handler: index.fail, codedir: functions/node-kinds}
  - {name: respond, runtime: node, handler: index.respond, codedir: functions/node-kinds}
  - {name: slow, runtime: node, handler: index.slow, codedir: functions/node-kinds}
  - {name: ctx, runtime: node, handler: index.ctx, codedir: functions/node-kinds, env: {GREETING: hi}}
`,
	},
	"go": {
		runtimes: map[string]string{
			"call": `
runtimes:
  go:
    protocol: call
    build: go
    command: ["{binary}", -c, "{config}"]
    address: unix
    env: {RUNTIME_VAR: from-runtime}
`,
			"stream": `
runtimes:
  go:
    protocol: stream
    discovery: config
    build: go
    command: ["{binary}"]
    env: {RUNTIME_VAR: from-runtime}
`,
		},
		functions: `
  - {name: echo, runtime: go, codedir: functions/go-kinds}
  - {name: returns, runtime: go, codedir: functions/go-kinds}
  - {name: fail, runtime: go, codedir: functions/go-kinds}
  - {name: respond, runtime: go, codedir: functions/go-kinds}
  - {name: slow, runtime: go, codedir: functions/go-kinds}
  - {name: ctx, runtime: go, codedir: functions/go-kinds, env: {GREETING: hi}}
`,
	},
}

func sameJSON(a, b []byte) bool {
	var x, y any
	return json.Unmarshal(a, &x) == nil && json.Unmarshal(b, &y) == nil && reflect.DeepEqual(x, y)
}

// TestRuntimeSemantics runs one semantic table through the host for every
// language in both protocols: payload kinds, return kinds, errors, HTTP
// response objects, context keys and the worker environment.
func TestRuntimeSemantics(t *testing.T) {
	requirePython(t)
	t.Setenv("POLYFN_SECRET", "must-not-reach-workers")
	for _, lang := range []string{"python", "node", "go"} {
		for _, protocol := range []string{"stream", "call"} {
			t.Run(lang+"/"+protocol, func(t *testing.T) {
				l := languages[lang]
				th := hosttest.Start(t, testdata(t), l.runtimes[protocol]+"functions:"+l.functions)
				semanticTable(t, th, lang)
			})
		}
	}
}

func semanticTable(t *testing.T, th *hosttest.Host, lang string) {
	payloads := []struct {
		name, body string
		want       []byte
		json       bool
	}{
		{"json object", `{"a": 1, "b": [true, null]}`, []byte(`{"a": 1, "b": [true, null]}`), true},
		{"raw bytes", "\x00\x01not json\xff", []byte("\x00\x01not json\xff"), false},
		{"empty", "", []byte(`{}`), true},
	}
	for _, p := range payloads {
		r := th.Call(t, "echo", p.body)
		ok := r.Status == 200 && (p.json && sameJSON(r.Body, p.want) || !p.json && bytes.Equal(r.Body, p.want))
		if !ok {
			t.Errorf("echo %s: got %d %q, want %q", p.name, r.Status, r.Body, p.want)
		}
	}
	returns := []struct{ kind, want string }{{"none", ""}, {"bytes", "\x00raw\xffbytes"}, {"str", `"hello"`}, {"dict", `{"kind": "dict", "n": [1, 2, 3]}`}}
	for _, rt := range returns {
		r := th.Call(t, "returns", `{"kind":"`+rt.kind+`"}`)
		ok := r.Status == 200 && (string(r.Body) == rt.want || rt.kind == "dict" && sameJSON(r.Body, []byte(rt.want)))
		if !ok {
			t.Errorf("return %s: got %d %q, want %q", rt.kind, r.Status, r.Body, rt.want)
		}
	}
	for i := 0; i < 2; i++ { // the worker keeps serving after an error
		r := th.Call(t, "fail", `{"why": "testing"}`)
		if r.Status != 500 || r.Err.Error.Type != "ValueError" || r.Err.Error.Message != "bad input: testing" {
			t.Errorf("error: got %d %+v, want 500 ValueError %q", r.Status, r.Err, "bad input: testing")
		}
	}
	r := th.Call(t, "respond", `{"name": "x"}`)
	if r.Status != 201 || r.Header.Get("X-Kind") != lang[:2] && r.Header.Get("X-Kind") != lang || !sameJSON(r.Body, []byte(`{"created": "x"}`)) {
		t.Errorf("HTTP response object: got %d %v %q", r.Status, r.Header, r.Body)
	}

	r = th.Do(t, http.MethodPut, "/function/ctx?q=1&z=x", []byte("{}"), http.Header{"X-Custom": {"yes"}})
	var got struct {
		Context map[string]any     `json:"context"`
		Env     map[string]*string `json:"env"`
		Cwd     string             `json:"cwd"`
	}
	if r.Status != 200 || json.Unmarshal(r.Body, &got) != nil {
		t.Fatalf("ctx: got %d %s", r.Status, r.Body)
	}
	id := r.Header.Get(httptrigger.InvocationIDHeader)
	c := got.Context
	for k, want := range map[string]any{"functionName": "ctx", "functionInvokeID": id, "invokeid": id, "messageQOS": 0.0, "messageTopic": "", "trigger": "http"} {
		if c[k] != want {
			t.Errorf("context[%q] = %#v, want %#v", k, c[k], want)
		}
	}
	if d, ok := c["deadline"].(string); !ok || !strings.Contains(d, "T") {
		t.Errorf("context deadline = %#v, want an RFC 3339 time", c["deadline"])
	}
	h, _ := c["http"].(map[string]any)
	q, _ := h["query"].(map[string]any)
	hd, _ := h["headers"].(map[string]any)
	if h["method"] != "PUT" || h["path"] != "/function/ctx" || q["q"] != "1" || hd["x-custom"] != "yes" {
		t.Errorf("context http = %#v", h)
	}
	env := got.Env
	if env["GREETING"] == nil || *env["GREETING"] != "hi" || env["RUNTIME_VAR"] == nil || *env["RUNTIME_VAR"] != "from-runtime" {
		t.Errorf("function and runtime env not passed: %v", env)
	}
	if env["POLYFN_SECRET"] != nil {
		t.Errorf("host environment leaked into the worker")
	}
	if !strings.HasPrefix(got.Cwd, th.RunDir()+"/") {
		t.Errorf("worker cwd %q is not a private directory under %s", got.Cwd, th.RunDir())
	}

	// Many invocations at once on one instance.
	var wg sync.WaitGroup
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body := fmt.Sprintf(`{"i": %d}`, i)
			if r := th.Call(t, "echo", body); r.Status != 200 || !sameJSON(r.Body, []byte(body)) {
				t.Errorf("concurrent echo: got %d %q, want %s", r.Status, r.Body, body)
			}
		}()
	}
	wg.Wait()

	// Shutdown drains: an invocation in flight when the host closes completes.
	done := make(chan hosttest.Response, 1)
	go func() { done <- th.Call(t, "slow", "") }()
	hosttest.WaitFor(t, 10*time.Second, "the slow invocation in flight", func() bool {
		for _, f := range th.Status() {
			if f.Name == "slow" && len(f.Instances) == 1 && f.Instances[0].InFlight == 1 {
				return true
			}
		}
		return false
	})
	th.Close(context.Background())
	if r := <-done; r.Status != 200 || string(r.Body) != `"done"` {
		t.Errorf("invocation in flight at shutdown: got %d %q, want 200 \"done\"", r.Status, r.Body)
	}
}
