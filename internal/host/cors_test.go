package host_test

import (
	"bytes"
	"net/http"
	"strings"
	"testing"

	"github.com/polyfn/polyfn/internal/hosttest"
)

// CORS for Azure Functions apps through the real host: a preflight is
// routed to the app serving the method it asks for and answered from that
// app's cors (else http.cors), without a key and without the worker seeing
// an invocation; the actual request needs its key and gets the app's CORS
// headers.
func TestAppCORS(t *testing.T) {
	t.Setenv("POLYFN_TEST_FN_KEY", fnKeyEnv)
	cfg := `
runtimes:
  python-worker:
    protocol: stream
    command: ["{self}"]
    env: {POLYFN_FAKE_WORKER: azure-python}
http:
  cors: {allow_origins: ["https://*.example.com"]}
auth:
  function_keys: [{name: ci, env: POLYFN_TEST_FN_KEY}]
functions:
  - {name: fnapp, runtime: python-worker, codedir: "{fn}"}
  - name: anonapp
    runtime: python-worker
    codedir: "{anon}"
    cors: {allow_origins: ["https://spa.example.net"], allow_credentials: true, expose_headers: [X-Polyfn-Invocation-Id]}
`
	th := hosttest.Start(t, t.TempDir(), cfg, "{self}", hosttest.Self(t),
		"{anon}", writeLevelApp(t, "anonymous", "anonymous"), "{fn}", writeLevelApp(t, "function", "function"))

	do := func(method, path string, kv ...string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(method, th.URL+path, nil)
		for i := 0; i+1 < len(kv); i += 2 {
			req.Header.Set(kv[i], kv[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	pre := func(path, origin string) *http.Response {
		t.Helper()
		return do(http.MethodOptions, path, "Origin", origin, "Access-Control-Request-Method", "GET", "Access-Control-Request-Headers", "x-functions-key")
	}
	for _, c := range []struct {
		path, origin string
		want         int
	}{
		{"/api/lvl/function", "https://a.example.com", 204},
		{"/api/lvl/function", "https://spa.example.net", 403},
		{"/api/lvl/anonymous", "https://spa.example.net", 204},
		{"/api/lvl/anonymous", "https://a.example.com", 403},
	} {
		if resp := pre(c.path, c.origin); resp.StatusCode != c.want ||
			(c.want == 204) != (resp.Header.Get("Access-Control-Allow-Origin") == c.origin) {
			t.Errorf("preflight of %s from %s: got %d %v, want %d", c.path, c.origin, resp.StatusCode, resp.Header, c.want)
		}
	}
	invocations := func() float64 {
		resp, err := http.Get(th.URL + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b bytes.Buffer
		_, _ = b.ReadFrom(resp.Body)
		n := 0.0
		for k, v := range metricValues(b.Bytes()) {
			if strings.HasPrefix(k, "polyfn_invocations_total{") {
				n += v
			}
		}
		return n
	}
	if n := invocations(); n != 0 {
		t.Fatalf("the preflights ran %v invocations, want none", n)
	}

	if resp := do(http.MethodGet, "/api/lvl/function?name=a", "Origin", "https://a.example.com", "X-Test", "python"); resp.StatusCode != 401 ||
		resp.Header.Get("Access-Control-Allow-Origin") != "https://a.example.com" {
		t.Errorf("fnapp without a key: got %d %v, want 401 with CORS headers", resp.StatusCode, resp.Header)
	}
	if resp := do(http.MethodGet, "/api/lvl/function?name=a", "Origin", "https://a.example.com", "X-Test", "python", "X-Functions-Key", fnKeyEnv); resp.StatusCode != 200 ||
		resp.Header.Get("Access-Control-Allow-Origin") != "https://a.example.com" || resp.Header.Get("Access-Control-Allow-Credentials") != "" {
		t.Errorf("fnapp with its key: got %d %v", resp.StatusCode, resp.Header)
	}
	resp := do(http.MethodGet, "/api/lvl/anonymous?name=a", "Origin", "https://spa.example.net", "X-Test", "python")
	if resp.StatusCode != 200 || resp.Header.Get("Access-Control-Allow-Origin") != "https://spa.example.net" ||
		resp.Header.Get("Access-Control-Allow-Credentials") != "true" || resp.Header.Get("Access-Control-Expose-Headers") != "X-Polyfn-Invocation-Id" {
		t.Errorf("anonapp from its origin: got %d %v", resp.StatusCode, resp.Header)
	}
	if n := invocations(); n != 2 {
		t.Errorf("the workers ran %v invocations, want 2 (the actual requests with a key or to the anonymous app)", n)
	}
}
