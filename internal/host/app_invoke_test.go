package host_test

import (
	"net/http"
	"strings"
	"testing"
)

// An app function's invocations go through the same path as a polyfn
// function's: a failed one is logged with its function, app and invocation,
// and every one is counted with its outcome.
func TestFailedAppInvocationsAreLoggedAndCounted(t *testing.T) {
	th := startAzureHost(t, "")

	// Without the X-Test header the worker fails the invocation: the
	// function's error.
	r := th.Do(t, http.MethodGet, "/api/hello/x", nil, nil)
	if r.Status != http.StatusInternalServerError || r.Err.Error.Type != "FunctionError" {
		t.Fatalf("failing app function: got %d %+v, want 500 FunctionError", r.Status, r.Err)
	}
	id := r.Header.Get("X-Polyfn-Invocation-Id")
	logged := func(msg, id string) bool {
		for _, line := range strings.Split(th.Logs.String(), "\n") {
			if strings.Contains(line, "msg=\""+msg+"\"") && strings.Contains(line, "invocation="+id) &&
				strings.Contains(line, "function=hello") && strings.Contains(line, "app=nodeapp") {
				return true
			}
		}
		return false
	}
	if !logged("function error", id) {
		t.Errorf("the failed app invocation %s is not logged with its function and app:\n%s", id, th.Logs.String())
	}

	// A response the host cannot send over HTTP: 502 InvalidResponse,
	// logged as a failed invocation.
	r = th.Do(t, http.MethodGet, "/api/hello/x?status=abc", nil, http.Header{"X-Test": {"node"}})
	if r.Status != http.StatusBadGateway || r.Err.Error.Type != "InvalidResponse" || !strings.Contains(r.Err.Error.Message, `"abc"`) {
		t.Fatalf("invalid HTTP result: got %d %+v, want 502 InvalidResponse naming the status", r.Status, r.Err)
	}
	if id := r.Header.Get("X-Polyfn-Invocation-Id"); !logged("invocation failed", id) {
		t.Errorf("the app invocation %s with an invalid response is not logged:\n%s", id, th.Logs.String())
	}

	if r := th.Do(t, http.MethodGet, "/api/hello/x", nil, http.Header{"X-Test": {"node"}}); r.Status != 201 {
		t.Fatalf("app function: got %d %s", r.Status, r.Body)
	}
	fams := scrape(t, th)
	for _, outcome := range []string{"FunctionError", "InvalidResponse", "success"} {
		if n := value(fams, "polyfn_invocations_total", map[string]string{"function": "hello", "trigger": "http", "outcome": outcome}); n != 1 {
			t.Errorf("polyfn_invocations_total of hello with outcome %s: %v, want 1", outcome, n)
		}
	}
}
