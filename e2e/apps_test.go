package e2e

import (
	"strings"
	"testing"

	"github.com/polyfn/polyfn/internal/hosttest"
)

// Functions naming the same app share one worker of polyfn's Python
// runtime, which keeps their same-named modules apart.
func TestPythonSharedApp(t *testing.T) {
	requirePython(t)
	for _, protocol := range []string{"call", "stream"} {
		t.Run(protocol, func(t *testing.T) {
			th := hosttest.Start(t, testdata(t), pythonRuntimes[protocol]+`
apps:
  tools: {concurrency: 4, instances: {max: 1}}
functions:
  - {name: whoami, handler: index.whoami, codedir: functions/kinds, app: tools}
  - {name: whoami2, handler: index.whoami, codedir: functions/kinds2, app: tools}
  - {name: echo, handler: index.echo, codedir: functions/kinds, app: tools}
`)
			a, b := th.Call(t, "whoami", ""), th.Call(t, "whoami2", "")
			if string(a.Body) != `{"module": "kinds"}` || string(b.Body) != `{"module": "kinds2"}` {
				t.Fatalf("got %q and %q", a.Body, b.Body)
			}
			if r := th.Call(t, "echo", `{"x": 1}`); string(r.Body) != `{"x": 1}` {
				t.Fatalf("echo: got %d %q", r.Status, r.Body)
			}
			pids := map[int]bool{}
			for _, f := range th.Status() {
				for _, i := range f.Instances {
					pids[i.Pid] = true
				}
			}
			if len(pids) != 1 {
				t.Fatalf("the app's three functions run in %d processes, want 1", len(pids))
			}
		})
	}
}

// polyfn validate --index starts each app's worker and reports what fails.
// polyfn's own runtime is not an Azure Functions worker: it cannot load the
// app's function, and validate must say so.
func TestValidateIndexReportsBrokenFunctions(t *testing.T) {
	requirePython(t)
	dir := tempDir(t)
	cfg := dir + "/polyfn.yaml"
	app := testdata(t) + "/azure-app"
	writeFile(t, cfg, `
runtimes:
  not-azure:
    protocol: stream
    command: [python3, -m, polyfn_runtime]
functions:
  - {name: app, runtime: not-azure, codedir: "`+app+`"}
  - {name: empty, runtime: not-azure, codedir: "`+dir+`"}
`)
	code, out, errOut := runCLI("validate", "-c", cfg, "--index")
	if code == 0 {
		t.Fatalf("validate --index exited 0:\n%s%s", out, errOut)
	}
	for _, want := range []string{"app app: broken", "HttpExample", "app empty: broken", "has no functions"} {
		if !strings.Contains(out, want) {
			t.Errorf("validate --index output lacks %q:\n%s", want, out)
		}
	}
}
