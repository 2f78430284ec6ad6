package e2e

import (
	"fmt"
	"strings"
	"testing"

	"github.com/polyfn/polyfn/internal/hosttest"
)

// At concurrency 1 the Python runtime runs plain functions on its event
// loop's thread instead of in a thread pool (over the stream; call mode
// ignores it). The semantic table holds unchanged on that path, and the
// function really ran there.
func TestRuntimeSemanticsPythonConcurrency1(t *testing.T) {
	requirePython(t)
	t.Setenv("POLYFN_SECRET", "must-not-reach-workers")
	functions := strings.ReplaceAll(languages["python"].functions, "}\n", ", concurrency: 1}\n") +
		"  - {name: thread, handler: index.thread, codedir: functions/kinds, concurrency: 1}\n" +
		"  - {name: thread8, handler: index.thread, codedir: functions/kinds}\n"
	for _, protocol := range []string{"stream", "call"} {
		t.Run(protocol, func(t *testing.T) {
			th := hosttest.Start(t, testdata(t), pythonRuntimes[protocol]+"functions:"+functions)
			wantMain := map[string]string{"stream": `{"main": true}`, "call": `{"main": false}`}[protocol]
			if r := th.Call(t, "thread", ""); r.Status != 200 || string(r.Body) != wantMain {
				t.Errorf("plain function at concurrency 1: got %d %s, want %s", r.Status, r.Body, wantMain)
			}
			if r := th.Call(t, "thread8", ""); r.Status != 200 || string(r.Body) != `{"main": false}` {
				t.Errorf("plain function at concurrency 8: got %d %s, want it in a handler thread", r.Status, r.Body)
			}
			semanticTable(t, th, "python")
		})
	}
}

// A function of an app runs at the app's concurrency: the worker is told
// the app's, not the function's default.
func TestPythonAppConcurrency1RunsPlainFunctionsInline(t *testing.T) {
	requirePython(t)
	for conc, want := range map[int]string{1: `{"main": true}`, 2: `{"main": false}`} {
		th := hosttest.Start(t, testdata(t), pythonRuntimes["stream"]+fmt.Sprintf(`
apps:
  tools: {concurrency: %d, instances: {max: 1}}
functions:
  - {name: thread, handler: index.thread, codedir: functions/kinds, app: tools}
  - {name: echo, handler: index.echo, codedir: functions/kinds, app: tools}
`, conc))
		if r := th.Call(t, "thread", ""); r.Status != 200 || string(r.Body) != want {
			t.Errorf("app concurrency %d: got %d %s, want %s", conc, r.Status, r.Body, want)
		}
		if r := th.Call(t, "echo", `{"x": 1}`); r.Status != 200 || string(r.Body) != `{"x": 1}` {
			t.Errorf("app concurrency %d: echo got %d %s", conc, r.Status, r.Body)
		}
	}
}
