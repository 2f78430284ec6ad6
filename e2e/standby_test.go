package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/polyfn/polyfn/internal/hosttest"
)

// A function with no live instance is served by binding the runtime's
// standby worker (environment reload, function load): the worker that was
// waiting serves it with the function's environment, and a new standby
// takes its place.
func TestStandbyWorkersServeColdFunctions(t *testing.T) {
	requirePython(t)
	th := hosttest.Start(t, testdata(t), `
functions:
  - {name: py, runtime: python3, handler: ctx.handler, codedir: functions/ctx, env: {GREETING: from-py}}
  - {name: js, runtime: node, handler: index.ctx, codedir: functions/node-kinds, env: {GREETING: from-js}}
`)
	standbyPid := func(runtime string) int {
		for _, s := range th.Standbys() {
			if s.Runtime == runtime && s.Ready {
				return s.Pid
			}
		}
		return 0
	}
	for _, tc := range []struct{ fn, runtime, greeting string }{{"py", "python3", "from-py"}, {"js", "node", "from-js"}} {
		var pid int
		hosttest.WaitFor(t, 30*time.Second, tc.runtime+"'s standby worker", func() bool { pid = standbyPid(tc.runtime); return pid != 0 })
		// polyfn's own runtimes get their worker id in the environment, off
		// the command line that every local user can read.
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil {
			t.Fatal(err)
		}
		if args := strings.Split(string(cmdline), "\x00"); !slices.Contains(args, "--functions-uri") ||
			slices.Contains(args, "--workerId") || slices.Contains(args, "--functions-worker-id") {
			t.Errorf("%s's worker command line %q: want the stream launch without the worker id", tc.runtime, args)
		}
		r := th.Call(t, tc.fn, "")
		var got struct {
			Context map[string]any     `json:"context"`
			Env     map[string]*string `json:"env"`
			Cwd     string             `json:"cwd"`
		}
		if r.Status != 200 || json.Unmarshal(r.Body, &got) != nil {
			t.Fatalf("%s: got %d %s", tc.fn, r.Status, r.Body)
		}
		if got.Env["GREETING"] == nil || *got.Env["GREETING"] != tc.greeting || got.Context["functionName"] != tc.fn {
			t.Errorf("%s: the bound standby does not run as the function: env %v, context %v", tc.fn, got.Env, got.Context)
		}
		if !strings.HasPrefix(got.Cwd, th.RunDir()+"/") {
			t.Errorf("%s: cwd %q", tc.fn, got.Cwd)
		}
		if p := pidOf(th, tc.fn); p != pid {
			t.Errorf("%s runs in process %d, want the standby worker %d", tc.fn, p, pid)
		}
		hosttest.WaitFor(t, 30*time.Second, "a new standby worker", func() bool { p := standbyPid(tc.runtime); return p != 0 && p != pid })
	}
	if !strings.Contains(th.Logs.String(), "standby worker bound") {
		t.Error("no standby worker was bound")
	}
}
