package host_test

import (
	"net/http"
	"strings"
	"testing"
)

const responseConfig = `
runtimes:
  fake-call:
    protocol: call
    command: ["{self}"]
    env: {POLYFN_FAKE_WORKER: ok}
  fake-stream:
    protocol: stream
    discovery: config
    command: ["{self}"]
    env: {POLYFN_FAKE_WORKER: stream}
functions:
  - {name: call, runtime: fake-call, handler: h.h, codedir: "{codedir}"}
  - {name: stream, runtime: fake-stream, handler: h.h, codedir: "{codedir}"}
`

// A function's explicit HTTP response sets the status and headers, in both
// protocols.
func TestHTTPResponseObjects(t *testing.T) {
	th := startHost(t, responseConfig)
	for _, fn := range []string{"call", "stream"} {
		r := th.Call(t, fn, "respond")
		if r.Status != http.StatusCreated || r.Header.Get("X-A") != "b" || string(r.Body) != "created" || r.Header.Get("Content-Type") != "application/octet-stream" {
			t.Errorf("%s: got %d %v %q", fn, r.Status, r.Header, r.Body)
		}
	}
	r := th.Call(t, "call", "respond-bad")
	if r.Status != 500 || r.Err.Error.Type != "InvalidResponse" || !strings.Contains(r.Err.Error.Message, "999") {
		t.Fatalf("invalid status: got %d %+v", r.Status, r.Err)
	}
}
