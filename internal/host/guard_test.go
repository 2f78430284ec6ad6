package host_test

import (
	"encoding/json"
	"strings"
	"testing"
)

// A worker cannot read the host's admin endpoints (403 with a JSON error),
// though it can call functions and the health check; the operator can.
func TestAdminEndpointsRefuseWorkers(t *testing.T) {
	th := startHost(t, `
runtimes:
  fake:
    protocol: call
    command: ["{self}"]
    env: {POLYFN_FAKE_WORKER: ok}
functions:
  - {name: f, runtime: fake, handler: h.h, codedir: "{codedir}"}
`)
	for path, want := range map[string]string{
		"/admin/functions": "403",
		"/metrics":         "403",
		"/healthz":         "200",
		"/function/f":      "200",
	} {
		r := th.Call(t, "f", "fetch:"+th.URL+path)
		status, body, _ := strings.Cut(string(r.Body), " ")
		if r.Status != 200 || status != want {
			t.Errorf("worker GET %s: got %d %q, want the worker to see %s", path, r.Status, r.Body, want)
			continue
		}
		if want == "403" {
			var e struct {
				Error struct{ Type, Message string }
			}
			if err := json.Unmarshal([]byte(body), &e); err != nil || e.Error.Type != "Forbidden" {
				t.Errorf("worker GET %s: body %q, want a JSON error of type Forbidden", path, body)
			}
		}
	}
	for _, path := range []string{"/admin/functions", "/metrics"} {
		if r := th.Do(t, "GET", path, nil, nil); r.Status != 200 {
			t.Errorf("operator GET %s: %d %s", path, r.Status, r.Body)
		}
	}
}
