package host_test

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/polyfn/polyfn/internal/hosttest"
)

// A 504 says which timeout expired, and the config key that sets it: the
// function's own while it ran, the same timeout while the invocation was
// still queued for a free slot.
func TestTimeoutNamesItsBound(t *testing.T) {
	th := startHost(t, `
runtimes:
  fake-ok:
    protocol: call
    command: ["{self}"]
    env: {POLYFN_FAKE_WORKER: ok}
    stop_grace: 500ms
apps:
  shared: {concurrency: 1, instances: {min: 1, max: 1}}
functions:
  - {name: hangs, runtime: fake-ok, handler: h.h, codedir: "{codedir}", timeout: 300ms, instances: {min: 1}}
  - {name: long, runtime: fake-ok, handler: h.h, codedir: "{codedir}", app: shared, timeout: 30s}
  - {name: short, runtime: fake-ok, handler: h.h, codedir: "{codedir}", app: shared, timeout: 300ms}
`)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := th.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	r := th.Call(t, "hangs", "hang")
	if r.Status != http.StatusGatewayTimeout || r.Err.Error.Type != "Timeout" ||
		!strings.Contains(r.Err.Error.Message, "function hangs did not finish") || !strings.Contains(r.Err.Error.Message, "functions[0].timeout") {
		t.Fatalf("got %d %+v, want 504 Timeout saying the function did not finish within functions[0].timeout", r.Status, r.Err)
	}

	// long holds the one slot of the app's pool; short waits for it.
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); th.Call(t, "long", "sleep:2s") }()
	hosttest.WaitFor(t, 10*time.Second, "the long invocation in flight", func() bool {
		for _, f := range th.Status() {
			for _, i := range f.Instances {
				if i.InFlight == 1 {
					return true
				}
			}
		}
		return false
	})
	r = th.Call(t, "short", "x")
	wg.Wait()
	if r.Status != http.StatusGatewayTimeout || !strings.Contains(r.Err.Error.Message, "function short was still queued for a free slot") ||
		!strings.Contains(r.Err.Error.Message, "functions[2].timeout") {
		t.Fatalf("got %d %+v, want 504 Timeout saying the invocation was queued when functions[2].timeout expired", r.Status, r.Err)
	}
}

// A body the HTTP trigger accepts but that is larger than a call-protocol
// worker's gRPC receive limit (grpc-go's default 4 MiB here) gets 413
// naming the limit, not a 500 ResourceExhausted passed off as the
// function's error.
func TestBodyAboveWorkerReceiveLimit(t *testing.T) {
	th := startHost(t, `
http: {max_body: 8Mi}
runtimes:
  fake-ok:
    protocol: call
    command: ["{self}"]
    env: {POLYFN_FAKE_WORKER: ok}
functions:
  - {name: good, runtime: fake-ok, handler: h.h, codedir: "{codedir}"}
`)
	r := th.Call(t, "good", strings.Repeat("x", 5<<20))
	if r.Status != http.StatusRequestEntityTooLarge || r.Err.Error.Type != "PayloadTooLarge" || !strings.Contains(r.Err.Error.Message, "4194304") {
		t.Fatalf("got %d %+v, want 413 PayloadTooLarge naming the worker's limit of 4194304 bytes", r.Status, r.Err)
	}
	if r := th.Call(t, "good", "ping"); r.Status != 200 || string(r.Body) != "fake:ping" {
		t.Fatalf("after the refused body: got %d %q, want 200", r.Status, r.Body)
	}
}

// The HTTP body and write timeouts bound the client, not the function: a
// function that runs longer than both answers.
func TestFunctionOutlivesHTTPTimeouts(t *testing.T) {
	th := startHost(t, `
http: {body_timeout: 200ms, write_timeout: 200ms}
runtimes:
  fake-ok:
    protocol: call
    command: ["{self}"]
    env: {POLYFN_FAKE_WORKER: ok}
functions:
  - {name: good, runtime: fake-ok, handler: h.h, codedir: "{codedir}"}
`)
	if r := th.Call(t, "good", "sleep:1s"); r.Status != 200 || string(r.Body) != "fake:sleep:1s" {
		t.Fatalf("got %d %q %+v, want 200", r.Status, r.Body, r.Err)
	}
}
