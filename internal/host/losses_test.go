package host_test

import (
	"context"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/polyfn/polyfn/internal/hosttest"
)

const lossConfig = `
runtimes:
  fake:
    protocol: call
    command: ["{self}"]
    env: {POLYFN_FAKE_WORKER: ok}
    stop_grace: 2s
  fake-stream:
    protocol: stream
    discovery: config
    standby: false
    command: ["{self}"]
    env: {POLYFN_FAKE_WORKER: stream}
    stop_grace: 2s
functions:
  - {name: victim, runtime: fake, handler: h.h, codedir: "{codedir}"}
  - {name: stream-victim, runtime: fake-stream, handler: h.h, codedir: "{codedir}"}
`

// Every kill -9 of a worker is one restart in polyfn_worker_restarts_total
// and one "instance exited unexpectedly" record with the exit status,
// whether the worker held an invocation (which fails with 502) or was idle.
func TestEveryKilledWorkerIsCountedAndLoggedOnce(t *testing.T) {
	th := startHost(t, lossConfig)
	const rounds = 5
	for _, fn := range []string{"victim", "stream-victim"} {
		for i := 0; i < rounds; i++ {
			// A worker that served once: one killed on its first invocation
			// would count as a crash loop and hold the next start back.
			if r := th.Warm(t, fn, "warm"); r.Status != 200 {
				t.Fatalf("%s round %d: warm-up %d %s", fn, i, r.Status, r.Body)
			}
			pid := workerPid(t, th, fn)
			res := make(chan hosttest.Response, 1)
			go func() { res <- th.Call(t, fn, "sleep:30s") }()
			hosttest.WaitFor(t, 10*time.Second, "the invocation to be in flight", func() bool { _, inflight, _ := instances(th, fn); return inflight == 1 })
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			if r := <-res; r.Status != http.StatusBadGateway || r.Err.Error.Type != "WorkerCrashed" {
				t.Fatalf("%s round %d: got %d %s, want 502 WorkerCrashed", fn, i, r.Status, r.Body)
			}
		}
		// And once idle.
		if r := th.Warm(t, fn, "warm"); r.Status != 200 {
			t.Fatalf("%s: warm-up %d %s", fn, r.Status, r.Body)
		}
		if err := syscall.Kill(workerPid(t, th, fn), syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		hosttest.WaitFor(t, 10*time.Second, "the idle worker's death to be seen", func() bool { live, _, _ := instances(th, fn); return live == 0 })
	}

	fams := scrape(t, th)
	logs := th.Logs.String()
	for _, fn := range []string{"victim", "stream-victim"} {
		lost := value(fams, "polyfn_worker_restarts_total", map[string]string{"function": fn, "cause": "lost_invocation"})
		crashed := value(fams, "polyfn_worker_restarts_total", map[string]string{"function": fn, "cause": "crashed"})
		if lost != rounds || crashed != 1 {
			t.Errorf("%s: polyfn_worker_restarts_total lost_invocation %v, crashed %v; want %d and 1 for %d kills", fn, lost, crashed, rounds, rounds+1)
		}
		records := 0
		for _, line := range strings.Split(logs, "\n") {
			if strings.Contains(line, `msg="instance exited unexpectedly" function=`+fn+" ") {
				records++
				if !strings.Contains(line, "signal: killed") {
					t.Errorf("%s: the record does not give the exit status: %s", fn, line)
				}
			}
		}
		if records != rounds+1 {
			t.Errorf("%s: %d records of an unexpected exit for %d kills", fn, records, rounds+1)
		}
	}
}

// An invocation still running when the drain's bound passes is cut: its
// caller gets 503 (the host is shutting down), not 502 WorkerCrashed.
func TestInvocationCutAtShutdownGets503(t *testing.T) {
	for _, fn := range []string{"victim", "stream-victim"} {
		t.Run(fn, func(t *testing.T) {
			th := startHost(t, lossConfig)
			if r := th.Warm(t, fn, "warm"); r.Status != 200 {
				t.Fatalf("warm-up: %d %s", r.Status, r.Body)
			}
			res := make(chan hosttest.Response, 1)
			go func() { res <- th.Call(t, fn, "sleep:30s") }()
			hosttest.WaitFor(t, 10*time.Second, "the invocation to be in flight", func() bool { _, inflight, _ := instances(th, fn); return inflight == 1 })
			ctx, cancel := context.WithCancel(context.Background())
			cancel() // the shutdown limit has passed
			th.Close(ctx)
			r := <-res
			if r.Status != http.StatusServiceUnavailable || r.Err.Error.Type != "Unavailable" || !strings.Contains(r.Err.Error.Message, "shutting down") {
				t.Fatalf("got %d %s, want 503 Unavailable saying the function is shutting down", r.Status, r.Body)
			}
			if strings.Contains(th.Logs.String(), "instance exited unexpectedly") {
				t.Errorf("a worker stopped at shutdown is logged as an unexpected exit")
			}
		})
	}
}
