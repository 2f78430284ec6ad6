package host_test

import (
	"strings"
	"testing"
	"time"

	"github.com/polyfn/polyfn/internal/hosttest"
)

const retryConfig = `
runtimes:
  closes-idle:
    protocol: stream
    discovery: config
    command: ["{self}"]
    env: {POLYFN_FAKE_WORKER: stream-close-idle}
    stop_grace: 2s
functions:
  - {name: flaky, runtime: closes-idle, handler: h.h, codedir: "{codedir}"}
`

// An invocation that never reached its worker — the worker dropped its
// stream while idle, before the host saw the process go — is retried once
// on a fresh instance instead of failing.
func TestUndeliveredInvocationIsRetried(t *testing.T) {
	th := startHost(t, retryConfig)
	for i, body := range []string{"one", "two", "three"} {
		r := th.Call(t, "flaky", body)
		if r.Status != 200 || string(r.Body) != "stream:"+body {
			t.Fatalf("invocation %d: got %d %q, want 200", i, r.Status, r.Body)
		}
		// The worker now drops its stream; wait until the host has ended it
		// (the worker logs the end), while the process still lingers.
		hosttest.WaitFor(t, 5*time.Second, "the worker's stream to end", func() bool {
			return strings.Count(th.Logs.String(), "stream ended") == i+1
		})
	}
	if !strings.Contains(th.Logs.String(), "retrying an invocation its worker never received") {
		t.Fatal("no invocation was retried: the test did not exercise the retry")
	}
}
