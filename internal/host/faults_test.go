package host_test

import (
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/polyfn/polyfn/internal/hosttest"
)

func startHost(t *testing.T, yamlText string) *hosttest.Host {
	t.Helper()
	self := hosttest.Self(t)
	return hosttest.Start(t, t.TempDir(), yamlText, "{codedir}", t.TempDir(), "{self}", self)
}

const faultConfig = `
runtimes:
  fake-ok:
    protocol: call
    command: ["{self}"]
    env: {POLYFN_FAKE_WORKER: ok}
    start_timeout: 2s
    stop_grace: 2s
  fake-exit:
    protocol: call
    command: ["{self}"]
    env: {POLYFN_FAKE_WORKER: exit}
  fake-never-ready:
    protocol: call
    command: ["{self}"]
    env: {POLYFN_FAKE_WORKER: never-ready}
    start_timeout: 500ms
  fake-garbage-listener:
    protocol: call
    command: ["{self}"]
    env: {POLYFN_FAKE_WORKER: garbage-listener}
    start_timeout: 500ms
  fake-garbage:
    protocol: call
    address: unix
    command: ["{self}"]
    env: {POLYFN_FAKE_WORKER: garbage}
functions:
  - {name: good, runtime: fake-ok, handler: h.h, codedir: "{codedir}"}
  - {name: crashy, runtime: fake-ok, handler: h.h, codedir: "{codedir}", concurrency: 4}
  - {name: slow, runtime: fake-ok, handler: h.h, codedir: "{codedir}", timeout: 300ms, concurrency: 1}
  - {name: exits, runtime: fake-exit, handler: h.h, codedir: "{codedir}"}
  - {name: never-ready, runtime: fake-never-ready, handler: h.h, codedir: "{codedir}"}
  - {name: garbage-listener, runtime: fake-garbage-listener, handler: h.h, codedir: "{codedir}"}
  - {name: garbage, runtime: fake-garbage, handler: h.h, codedir: "{codedir}"}
`

func TestFaults(t *testing.T) {
	th := startHost(t, faultConfig)
	good := func() {
		t.Helper()
		r := th.Call(t, "good", "ping")
		if r.Status != 200 || string(r.Body) != "fake:ping" {
			t.Fatalf("good function: got %d %q, want 200 \"fake:ping\"", r.Status, r.Body)
		}
	}
	good()

	t.Run("exits at start", func(t *testing.T) {
		r := th.Call(t, "exits", "x")
		if r.Status != http.StatusBadGateway || r.Err.Error.Type != "WorkerStartFailed" {
			t.Fatalf("got %d %+v, want 502 WorkerStartFailed", r.Status, r.Err)
		}
		for _, want := range []string{"exit status 3", "fatal: cannot load handler module nope"} {
			if !strings.Contains(r.Err.Error.Message, want) {
				t.Errorf("error message %q does not contain %q", r.Err.Error.Message, want)
			}
		}
		good()
	})

	t.Run("never ready", func(t *testing.T) {
		r := th.Call(t, "never-ready", "x")
		if r.Status != http.StatusBadGateway || !strings.Contains(r.Err.Error.Message, "not ready within start timeout 500ms") {
			t.Fatalf("got %d %+v, want 502 naming the start timeout", r.Status, r.Err)
		}
		good()
	})

	t.Run("speaks garbage", func(t *testing.T) {
		r := th.Call(t, "garbage-listener", "x")
		if r.Status != http.StatusBadGateway || r.Err.Error.Type != "WorkerStartFailed" {
			t.Fatalf("got %d %+v, want 502 WorkerStartFailed", r.Status, r.Err)
		}
		good()
	})

	t.Run("prints garbage", func(t *testing.T) {
		r := th.Call(t, "garbage", "hi")
		if r.Status != 200 || string(r.Body) != "fake:hi" {
			t.Fatalf("got %d %q, want 200 \"fake:hi\"", r.Status, r.Body)
		}
		hosttest.WaitFor(t, 2*time.Second, "the overlong line in the log", func() bool {
			return strings.Contains(th.Logs.String(), "function=garbage") && strings.Contains(th.Logs.String(), strings.Repeat("x", 1000))
		})
		if strings.Contains(th.Logs.String(), strings.Repeat("x", 65<<10)) {
			t.Error("an overlong worker line reached the log uncut")
		}
		good()
	})

	t.Run("dies mid-invocation", func(t *testing.T) {
		// Warm an instance, then have two invocations in flight on it when it dies.
		if r := th.Warm(t, "crashy", "warm"); r.Status != 200 {
			t.Fatalf("warm-up: %d %s", r.Status, r.Body)
		}
		var wg sync.WaitGroup
		wg.Add(1)
		var slowResp hosttest.Response
		go func() { defer wg.Done(); slowResp = th.Call(t, "crashy", "sleep:5s") }()
		hosttest.WaitFor(t, 2*time.Second, "the slow invocation in flight", func() bool {
			for _, f := range th.Status() {
				if f.Name == "crashy" && len(f.Instances) == 1 && f.Instances[0].InFlight == 1 {
					return true
				}
			}
			return false
		})
		r := th.Call(t, "crashy", "crash")
		wg.Wait()
		for _, got := range []hosttest.Response{r, slowResp} {
			if got.Status != http.StatusBadGateway || got.Err.Error.Type != "WorkerCrashed" {
				t.Errorf("in-flight invocation: got %d %+v, want 502 WorkerCrashed", got.Status, got.Err)
			}
		}
		// The next invocation gets a fresh instance.
		if r := th.Warm(t, "crashy", "again"); r.Status != 200 || string(r.Body) != "fake:again" {
			t.Fatalf("after the crash: got %d %q, want 200", r.Status, r.Body)
		}
		good()
	})

	t.Run("hangs past the timeout", func(t *testing.T) {
		r := th.Call(t, "slow", "hang")
		if r.Status != http.StatusGatewayTimeout || r.Err.Error.Type != "Timeout" {
			t.Fatalf("got %d %+v, want 504 Timeout", r.Status, r.Err)
		}
		pids := func() (out []int) {
			for _, f := range th.Status() {
				if f.Name == "slow" {
					for _, i := range f.Instances {
						out = append(out, i.Pid)
					}
				}
			}
			return out
		}
		hung := pids()
		// The call protocol cannot say whether the worker gave the slot
		// back: the instance that hung is replaced, and the next invocation
		// runs on a new one.
		if r := th.Call(t, "slow", "ok"); r.Status != 200 || string(r.Body) != "fake:ok" {
			t.Fatalf("after the timeout: got %d %q, want 200", r.Status, r.Body)
		}
		hosttest.WaitFor(t, 5*time.Second, "the hung worker to be stopped", func() bool {
			for _, p := range hung {
				if syscall.Kill(p, 0) == nil {
					return false
				}
			}
			return true
		})
		if now := pids(); len(now) != 1 || len(hung) > 0 && now[0] == hung[0] {
			t.Errorf("instances after the timeout: %v, before: %v; want one new instance", now, hung)
		}
		good()
	})

	t.Run("unknown function", func(t *testing.T) {
		r := th.Call(t, "nope", "x")
		if r.Status != http.StatusNotFound || r.Err.Error.Type != "FunctionNotFound" {
			t.Fatalf("got %d %+v, want 404 FunctionNotFound", r.Status, r.Err)
		}
	})
}
