package host_test

import (
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
