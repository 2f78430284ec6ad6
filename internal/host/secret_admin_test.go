package host_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/polyfn/polyfn/internal/hosttest"
)

// A worker that prints its secret environment when it fails: the failure
// shows in the caller's error and in /admin/functions (and so in polyfn
// status) with the secret masked.
func TestAdminMasksSecrets(t *testing.T) {
	const pw = "admin-secret-4242"
	t.Setenv("PF_ADMIN_SECRET", pw)
	th := startHost(t, `
runtimes:
  fake-exit:
    protocol: call
    command: ["{self}"]
    env: {POLYFN_FAKE_WORKER: exit-secret}
functions:
  - name: leaky
    runtime: fake-exit
    handler: h.h
    codedir: "{codedir}"
    env: {API_TOKEN: "${PF_ADMIN_SECRET}"}
`)
	// The caller's error names the failure, not the secret.
	if r := th.Call(t, "leaky", "x"); r.Status != http.StatusBadGateway || strings.Contains(string(r.Body), pw) || !strings.Contains(r.Err.Error.Message, "[redacted]") {
		t.Fatalf("the invocation's error: %d %s", r.Status, r.Body)
	}
	var body string
	hosttest.WaitFor(t, 10*time.Second, "the failure in /admin/functions", func() bool {
		r := th.Do(t, http.MethodGet, "/admin/functions", nil, nil)
		body = string(r.Body)
		return r.Status == http.StatusOK && strings.Contains(body, "cannot connect with token")
	})
	if strings.Contains(body, pw) || !strings.Contains(body, "cannot connect with token [redacted]") {
		t.Fatalf("/admin/functions:\n%s", body)
	}
}
