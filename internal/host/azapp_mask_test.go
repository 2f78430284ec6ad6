package host_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/polyfn/polyfn/internal/hosttest"
)

// A broken app's 502 quotes the worker's last stderr lines, which may print
// a secret of the config: like any invocation error's message, it must be
// masked (RouteApp's AppBroken error does not pass through Host.Invoke).
func TestAzureAppBrokenMasksSecrets(t *testing.T) {
	// Printed by the azapp-stderr worker as LEAK. The value is this test's
	// own: secret.Process keeps every secret a config of this process
	// took, so any other test's expected message containing it would come
	// masked.
	t.Setenv("REVIEW_SECRET", "review-secret-7f3a9c")
	th, _ := startAzapp(t, azappHostJSON, `  - {name: printed, runtime: stderr-worker, codedir: "{codedir}", env: {LEAK: "${REVIEW_SECRET}"}}
`)
	var msg string
	hosttest.WaitFor(t, 10*time.Second, "app printed's 502 quoting its stderr", func() bool {
		r := th.Do(t, http.MethodGet, "/api/nothing", nil, nil)
		msg = r.Err.Error.Message
		return r.Status == http.StatusBadGateway && r.Err.Error.Type == "AppBroken" && strings.Contains(msg, "the worker's last stderr lines")
	})
	if strings.Contains(msg, "review-secret-7f3a9c") {
		t.Fatalf("the 502 quotes a secret of the config unmasked: %s", msg)
	}
}

// With keys configured, a client without a key learns nothing of a broken
// app: the reason (the worker's stderr, the app's paths) is for the log and
// the admin status.
func TestAzureAppBrokenNeedsKey(t *testing.T) {
	t.Setenv("REVIEW_FN_KEY", "review-function-key")
	th := hosttest.Start(t, t.TempDir(), `
runtimes:
  stderr-worker:
    protocol: stream
    command: ["{self}"]
    env: {POLYFN_FAKE_WORKER: azapp-stderr}
auth:
  function_keys: [{name: ci, env: REVIEW_FN_KEY}]
functions:
  - {name: printed, runtime: stderr-worker, codedir: "{codedir}", auth: function}
`, "{self}", hosttest.Self(t), "{codedir}", t.TempDir())
	var status int
	var typ, msg string
	hosttest.WaitFor(t, 10*time.Second, "an answer once the app was tried", func() bool {
		r := th.Do(t, http.MethodGet, "/api/nothing", nil, nil)
		status, typ, msg = r.Status, r.Err.Error.Type, r.Err.Error.Message
		return r.Status != http.StatusServiceUnavailable
	})
	if strings.Contains(msg, "stderr") || strings.Contains(msg, "/tmp/") {
		t.Fatalf("a request without a key got %d with the app's failure: %s", status, msg)
	}
	if status != http.StatusBadGateway || typ != "AppBroken" || msg != "app printed is not available" {
		t.Fatalf("a request without a key got %d %s %q, want 502 AppBroken %q", status, typ, msg, "app printed is not available")
	}
	// A wrong key is no key.
	r := th.Do(t, http.MethodGet, "/api/nothing", nil, http.Header{"X-Functions-Key": {"wrong"}})
	if r.Status != http.StatusBadGateway || r.Err.Error.Message != "app printed is not available" {
		t.Fatalf("a request with a wrong key got %d %q", r.Status, r.Err.Error.Message)
	}
	// A client with a function key reads the reason, as it would in the
	// app's status.
	r = th.Do(t, http.MethodGet, "/api/nothing", nil, http.Header{"X-Functions-Key": {"review-function-key"}})
	if r.Status != http.StatusBadGateway || r.Err.Error.Type != "AppBroken" || !strings.Contains(r.Err.Error.Message, "the worker's last stderr lines") {
		t.Fatalf("a request with a function key got %d %+v, want 502 AppBroken with the worker's stderr", r.Status, r.Err)
	}
}
