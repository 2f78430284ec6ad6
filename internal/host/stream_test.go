package host_test

import (
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/polyfn/polyfn/internal/hosttest"
)

const streamConfig = `
runtimes:
  fake-stream:
    protocol: stream
    discovery: config
    command: ["{self}"]
    env: {POLYFN_FAKE_WORKER: stream}
    init_timeout: 5s
    stop_grace: 2s
    cancel_grace: 300ms
  wrong-first:
    protocol: stream
    discovery: config
    command: ["{self}"]
    env: {POLYFN_FAKE_WORKER: stream-wrong-first}
    init_timeout: 5s
  unknown-id:
    protocol: stream
    discovery: config
    command: ["{self}"]
    env: {POLYFN_FAKE_WORKER: stream-unknown-id}
    init_timeout: 5s
  init-fail:
    protocol: stream
    discovery: config
    command: ["{self}"]
    env: {POLYFN_FAKE_WORKER: stream-init-fail}
  load-fail:
    protocol: stream
    discovery: config
    command: ["{self}"]
    env: {POLYFN_FAKE_WORKER: stream-load-fail}
  unknown-response:
    protocol: stream
    discovery: config
    command: ["{self}"]
    env: {POLYFN_FAKE_WORKER: stream-unknown-response}
functions:
  - {name: good, runtime: fake-stream, handler: h.h, codedir: "{codedir}"}
  - {name: crashy, runtime: fake-stream, handler: h.h, codedir: "{codedir}"}
  - {name: slow, runtime: fake-stream, handler: h.h, codedir: "{codedir}", timeout: 300ms, concurrency: 1}
  - {name: wrong-first, runtime: wrong-first, handler: h.h, codedir: "{codedir}"}
  - {name: unknown-id, runtime: unknown-id, handler: h.h, codedir: "{codedir}"}
  - {name: init-fail, runtime: init-fail, handler: h.h, codedir: "{codedir}"}
  - {name: load-fail, runtime: load-fail, handler: h.h, codedir: "{codedir}"}
  - {name: unknown-response, runtime: unknown-response, handler: h.h, codedir: "{codedir}"}
`

func TestStreamProtocolFaults(t *testing.T) {
	th := startHost(t, streamConfig)
	good := func() {
		t.Helper()
		r := th.Call(t, "good", "ping")
		if r.Status != 200 || string(r.Body) != "stream:ping" {
			t.Fatalf("good function: got %d %q, want 200 \"stream:ping\"", r.Status, r.Body)
		}
	}
	good()
	hosttest.WaitFor(t, 2*time.Second, "the worker's RpcLog in the host log", func() bool {
		return strings.Contains(th.Logs.String(), "fake log line for ping") && strings.Contains(th.Logs.String(), "function=good")
	})

	startFails := []struct{ fn, want string }{
		{"wrong-first", "the first message on a stream must be StartStream"},
		{"unknown-id", "unknown worker id"},
		{"init-fail", "worker init failed: cannot initialise: boom"},
		{"load-fail", "ImportError: no module named nope"},
	}
	for _, tt := range startFails {
		t.Run(tt.fn, func(t *testing.T) {
			r := th.Call(t, tt.fn, "x")
			if r.Status != http.StatusBadGateway || r.Err.Error.Type != "WorkerStartFailed" || !strings.Contains(r.Err.Error.Message, tt.want) {
				t.Fatalf("got %d %+v, want 502 WorkerStartFailed mentioning %q", r.Status, r.Err, tt.want)
			}
			good()
		})
	}

	t.Run("response for an unknown invocation", func(t *testing.T) {
		r := th.Call(t, "unknown-response", "x")
		if r.Status != 200 || string(r.Body) != "stream:x" {
			t.Fatalf("got %d %q", r.Status, r.Body)
		}
	})

	t.Run("function error", func(t *testing.T) {
		r := th.Call(t, "good", "raise")
		if r.Status != 500 || r.Err.Error.Type != "KeyError" || r.Err.Error.Message != "'missing'" {
			t.Fatalf("got %d %+v", r.Status, r.Err)
		}
	})

	for _, how := range []string{"crash", "close"} {
		t.Run("stream lost mid-invocation: "+how, func(t *testing.T) {
			if r := th.Warm(t, "crashy", "warm"); r.Status != 200 {
				t.Fatalf("warm-up: %d %s", r.Status, r.Body)
			}
			r := th.Call(t, "crashy", how)
			if r.Status != http.StatusBadGateway || r.Err.Error.Type != "WorkerCrashed" {
				t.Fatalf("got %d %+v, want 502 WorkerCrashed", r.Status, r.Err)
			}
			if r := th.Warm(t, "crashy", "again"); r.Status != 200 || string(r.Body) != "stream:again" {
				t.Fatalf("after losing the worker: got %d %q, want a fresh instance", r.Status, r.Body)
			}
			good()
		})
	}

	t.Run("never answers a cancel", func(t *testing.T) {
		// Warm first: the function's short timeout counts queueing, and a
		// cold start on a loaded machine could use it up before the
		// invocation reaches the worker.
		if r := th.Warm(t, "slow", "warm"); r.Status != 200 {
			t.Fatalf("warm-up: got %d %q", r.Status, r.Body)
		}
		r := th.Call(t, "slow", "hang")
		if r.Status != http.StatusGatewayTimeout || r.Err.Error.Type != "Timeout" {
			t.Fatalf("got %d %+v, want 504 Timeout", r.Status, r.Err)
		}
		id := r.Header.Get("X-Polyfn-Invocation-Id")
		hosttest.WaitFor(t, 2*time.Second, "InvocationCancel to reach the worker", func() bool {
			return strings.Contains(th.Logs.String(), "ignoring cancel of "+id)
		})
		pid := pidOf(th, "slow")
		if r := th.Call(t, "slow", "ok"); r.Status != 200 || string(r.Body) != "stream:ok" {
			t.Fatalf("after the timeout: got %d %q", r.Status, r.Body)
		}
		// The worker still runs the hung invocation, so it still holds the
		// slot: after cancel_grace it is replaced.
		hosttest.WaitFor(t, 5*time.Second, "the stuck instance to be replaced", func() bool {
			return strings.Contains(th.Logs.String(), "instance still holds a slot it was asked to give back") && pidOf(th, "slow") != pid
		})
		if r := th.Warm(t, "slow", "again"); r.Status != 200 || string(r.Body) != "stream:again" {
			t.Fatalf("after the replacement: got %d %q", r.Status, r.Body)
		}
	})
}

// A worker that stops reading its stream (a stuck event loop) while large
// messages are on their way to it: the host's writes to the stream block
// once the transport's flow control is exhausted. The invocations still end
// at their timeout, and the worker is replaced, instead of the cancel and
// the stop waiting behind a write that never completes.
func TestStreamWorkerThatStopsReading(t *testing.T) {
	th := startHost(t, `
runtimes:
  fake-stream:
    protocol: stream
    discovery: config
    command: ["{self}"]
    env: {POLYFN_FAKE_WORKER: stream}
    init_timeout: 5s
    stop_grace: 1s
    cancel_grace: 300ms
functions:
  - {name: f, runtime: fake-stream, handler: h.h, codedir: "{codedir}", timeout: 500ms, concurrency: 4, instances: {max: 1}}
`)
	if r := th.Warm(t, "f", "warm"); r.Status != 200 {
		t.Fatalf("warm-up: %d %s", r.Status, r.Body)
	}
	pid := pidOf(th, "f")
	big := strings.Repeat("x", 2<<20)
	results := make(chan hosttest.Response, 3)
	go func() { results <- th.Call(t, "f", "deaf") }()
	hosttest.WaitFor(t, 2*time.Second, "the deaf invocation to reach the worker", func() bool {
		st := th.Status()
		return len(st) == 1 && st[0].InFlight == 1
	})
	time.Sleep(50 * time.Millisecond)
	for range 2 {
		go func() { results <- th.Call(t, "f", big) }()
	}
	deadline := time.After(10 * time.Second)
	for range 3 {
		select {
		case r := <-results:
			if r.Status != http.StatusGatewayTimeout && r.Status != http.StatusBadGateway {
				t.Errorf("got %d %+v, want the invocation to time out or lose its worker", r.Status, r.Err)
			}
		case <-deadline:
			_ = syscall.Kill(pid, syscall.SIGKILL) // unblock the host before failing
			t.Fatal("invocations to a worker that stopped reading its stream did not end")
		}
	}
	hosttest.WaitFor(t, 10*time.Second, "the deaf worker to be replaced", func() bool { return pidOf(th, "f") != pid })
	if r := th.Warm(t, "f", "again"); r.Status != 200 || string(r.Body) != "stream:again" {
		t.Fatalf("after the replacement: got %d %q", r.Status, r.Body)
	}
}
