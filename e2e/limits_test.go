package e2e

import (
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/polyfn/polyfn/internal/hosttest"
)

// A function that fills its worker's pids limit sees the refusal itself;
// invocations that then need a thread the worker cannot start fail at once
// with 502 naming the limit — not after the timeout — and the instance is
// replaced. Node.js workers need no new thread and keep serving.
func TestRuntimesAtThePidsLimit(t *testing.T) {
	requirePython(t)
	hosttest.RequireCgroups(t)
	th := hosttest.Start(t, testdata(t), `
functions:
  - {name: py, handler: pids.handler, codedir: functions/pids, timeout: 20s, limits: {pids: 32}}
  - {name: py-call, protocol: call, handler: pids.handler, codedir: functions/pids, timeout: 20s, limits: {pids: 32}}
  - {name: node, runtime: node, handler: index.handler, codedir: functions/pids, timeout: 20s, limits: {pids: 32}}
`)
	for _, fn := range []string{"py", "py-call", "node"} {
		t.Run(fn, func(t *testing.T) {
			if r := th.Call(t, fn, `{"do": "ping"}`); r.Status != 200 {
				t.Fatalf("warm-up: %d %s", r.Status, r.Body)
			}
			pid := pidOf(th, fn)
			r := th.Call(t, fn, `{"do": "bomb"}`)
			var bomb struct {
				Started int    `json:"started"`
				Error   string `json:"error"`
			}
			if r.Status != 200 || json.Unmarshal(r.Body, &bomb) != nil || bomb.Started >= 32 || (bomb.Error != "BlockingIOError" && bomb.Error != "EAGAIN") {
				t.Fatalf("bomb: got %d %s, want the function to see the fork refused", r.Status, r.Body)
			}

			// Four at once: each needs a thread of its own in a Python worker.
			results := make([]hosttest.Response, 4)
			var wg sync.WaitGroup
			for i := range results {
				wg.Add(1)
				go func() { defer wg.Done(); results[i] = th.Call(t, fn, `{"do": "nap"}`) }()
			}
			wg.Wait()
			refused := 0
			for _, r := range results {
				switch {
				case r.Status == 200:
				case fn != "node" && r.Status == http.StatusBadGateway && r.Err.Error.Type == "WorkerCrashed" &&
					strings.Contains(r.Err.Error.Message, "cannot start a thread") && strings.Contains(r.Err.Error.Message, "limits.pids"):
					refused++
				default:
					t.Errorf("nap: got %d %s", r.Status, r.Body)
				}
			}
			if fn != "node" && refused == 0 {
				t.Errorf("no invocation was refused for want of a thread; the test did not reach the limit")
			}
			t.Logf("%d of 4 refused at once", refused)
			if r := th.Call(t, fn, `{"do": "ping"}`); r.Status != 200 {
				t.Fatalf("after: got %d %s", r.Status, r.Body)
			}
			if fn != "node" && pidOf(th, fn) == pid {
				t.Errorf("the worker at its limit (%d) was not replaced", pid)
			}
		})
	}
}
