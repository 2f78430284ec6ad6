package host_test

import (
	"encoding/json"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/polyfn/polyfn/internal/hosttest"
)

// A worker that keeps failing at start is not restarted at once every time:
// invocations during the back-off fail at once with the cause, the function
// shows as broken, and it recovers by itself once a start succeeds.
func TestCrashLoopBacksOffAndRecovers(t *testing.T) {
	counter := filepath.Join(hosttest.Writable(t, t.TempDir()), "starts")
	th := startHost(t, `
runtimes:
  fake-exit:
    protocol: call
    command: ["{self}"]
    env: {POLYFN_FAKE_WORKER: exit}
  fake-flaky:
    protocol: call
    command: ["{self}"]
    env: {POLYFN_FAKE_WORKER: exit-3-times, POLYFN_FAKE_COUNTER: "`+counter+`"}
functions:
  - {name: loop, runtime: fake-exit, handler: h.h, codedir: "{codedir}"}
  - {name: flaky, runtime: fake-flaky, handler: h.h, codedir: "{codedir}"}
`)
	// Twenty invocations in quick succession start only a handful of workers.
	for i := 0; i < 20; i++ {
		r := th.Call(t, "loop", "x")
		if r.Status != http.StatusBadGateway || r.Err.Error.Type != "WorkerStartFailed" || !strings.Contains(r.Err.Error.Message, "exit status 3") {
			t.Fatalf("invocation %d: got %d %+v, want 502 WorkerStartFailed with the cause", i, r.Status, r.Err)
		}
	}
	starts := strings.Count(th.Logs.String(), "msg=\"instance failed to start\" function=loop")
	if starts < 1 || starts > 5 {
		t.Fatalf("a crash-looping function was started %d times for 20 quick invocations, want a back-off", starts)
	}
	t.Logf("20 invocations started the crash-looping worker %d times", starts)
	for _, f := range th.Status() {
		if f.Name == "loop" && (f.State != "broken" || !strings.Contains(f.LastError, "exit status 3")) {
			t.Fatalf("loop: state %q, last error %q; want broken with the cause", f.State, f.LastError)
		}
	}

	// /admin/functions shows it broken, with the cause and, while it backs
	// off (a failing invocation starts a back-off if none is under way),
	// when the back-off ends.
	type fnDoc struct {
		Name         string    `json:"name"`
		State        string    `json:"state"`
		LastError    string    `json:"last_error"`
		BackoffUntil time.Time `json:"backoff_until"`
	}
	var loop fnDoc
	hosttest.WaitFor(t, 10*time.Second, "/admin/functions to show loop backing off", func() bool {
		th.Call(t, "loop", "x")
		resp, err := http.Get(th.URL + "/admin/functions")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var doc struct {
			Functions []fnDoc `json:"functions"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
			t.Fatal(err)
		}
		for _, f := range doc.Functions {
			if f.Name == "loop" {
				loop = f
			}
		}
		return !loop.BackoffUntil.IsZero()
	})
	if loop.State != "broken" || !strings.Contains(loop.LastError, "exit status 3") {
		t.Fatalf("/admin/functions for loop: %+v; want broken with the cause", loop)
	}

	// flaky fails three starts, then serves: retrying brings it back.
	var last hosttest.Response
	hosttest.WaitFor(t, 10*time.Second, "flaky to recover", func() bool {
		last = th.Call(t, "flaky", "hello")
		return last.Status == 200
	})
	if string(last.Body) != "fake:hello" {
		t.Fatalf("after recovery: got %q", last.Body)
	}
	for _, f := range th.Status() {
		if f.Name == "flaky" && f.State != "ready" {
			t.Fatalf("flaky after recovery: state %q", f.State)
		}
	}
}
