package host_test

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/polyfn/polyfn/internal/hosttest"
)

const azureConfig = `
runtimes:
  node-worker:
    protocol: stream
    command: ["{self}"]
    env: {POLYFN_FAKE_WORKER: azure-node}
  python-worker:
    protocol: stream
    command: ["{self}"]
    env: {POLYFN_FAKE_WORKER: azure-python}
  failing-worker:
    protocol: stream
    command: ["{self}"]
    env: {POLYFN_FAKE_WORKER: azure-index-fail}
functions:
  - {name: nodeapp, runtime: node-worker, codedir: "{nodeapp}"}
  - {name: pyapp, runtime: python-worker, codedir: "{pyapp}", concurrency: 1, instances: {max: 2}}
`

// A function.json app as the Python worker's v1 model has it.
func writePythonApp(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	fn := filepath.Join(dir, "HttpExample")
	if err := os.Mkdir(fn, 0o755); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"host.json":               `{"version": "2.0"}`,
		"HttpExample/__init__.py": "def main(req): ...\n",
		"HttpExample/function.json": `{"scriptFile": "__init__.py", "bindings": [
			{"authLevel": "anonymous", "type": "httpTrigger", "direction": "in", "name": "req", "methods": ["get"]},
			{"type": "http", "direction": "out", "name": "res"}]}`,
	}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func startAzureHost(t *testing.T, extra string) *hosttest.Host {
	t.Helper()
	self := hosttest.Self(t)
	return hosttest.Start(t, t.TempDir(), azureConfig+extra, "{self}", self, "{nodeapp}", t.TempDir(), "{pyapp}", writePythonApp(t), "{codedir}", t.TempDir())
}

func TestAzureAppsOverHTTP(t *testing.T) {
	th := startAzureHost(t, "")

	t.Run("node v4 app, worker indexing", func(t *testing.T) {
		r := th.Do(t, http.MethodPost, "/api/hello/polyfn?q=1", []byte("payload"), http.Header{"X-Test": {"node"}})
		if r.Status != 201 || string(r.Body) != "hello polyfn via POST; q=1; body=payload" || r.Header.Get("X-Fake") != "node" {
			t.Fatalf("got %d %q %v", r.Status, r.Body, r.Header)
		}
		if r.Header.Get("X-Polyfn-Invocation-Id") == "" {
			t.Error("no invocation id header")
		}
	})
	t.Run("optional route parameter", func(t *testing.T) {
		r := th.Do(t, http.MethodGet, "/api/hello", nil, http.Header{"X-Test": {"node"}})
		if r.Status != 201 || !strings.HasPrefix(string(r.Body), "hello  via GET") {
			t.Fatalf("got %d %q", r.Status, r.Body)
		}
	})
	// Bytes that are not UTF-8 in the path and a header reach the worker
	// as U+FFFD; protobuf cannot encode them as they came, and the stream to
	// the worker ended (502 for this call and every other on the worker).
	t.Run("bytes that are not UTF-8", func(t *testing.T) {
		r := th.Do(t, http.MethodGet, "/api/hello/%FF", nil, http.Header{"X-Test": {"node"}, "X-Bin": {"\xc3("}})
		if r.Status != 201 || string(r.Body) != "hello \ufffd via GET; q=; body=" {
			t.Fatalf("got %d %q %+v", r.Status, r.Body, r.Err)
		}
	})
	t.Run("methods are enforced", func(t *testing.T) {
		r := th.Do(t, http.MethodDelete, "/api/hello/x", nil, nil)
		if r.Status != http.StatusMethodNotAllowed || r.Err.Error.Type != "MethodNotAllowed" {
			t.Fatalf("got %d %+v", r.Status, r.Err)
		}
		r = th.Do(t, http.MethodPost, "/api/HttpExample", nil, nil)
		if r.Status != http.StatusMethodNotAllowed {
			t.Fatalf("POST to a GET-only function.json function: got %d", r.Status)
		}
	})
	t.Run("function.json app, host indexing, response in output_data", func(t *testing.T) {
		r := th.Do(t, http.MethodGet, "/api/HttpExample?name=bob", nil, http.Header{"X-Test": {"python"}})
		if r.Status != 200 || string(r.Body) != "Hello, bob." || !strings.HasPrefix(r.Header.Get("Content-Type"), "text/plain") {
			t.Fatalf("got %d %q %v", r.Status, r.Body, r.Header)
		}
	})
	t.Run("unknown route", func(t *testing.T) {
		r := th.Do(t, http.MethodGet, "/api/nothing/here", nil, nil)
		if r.Status != http.StatusNotFound || r.Err.Error.Type != "FunctionNotFound" {
			t.Fatalf("got %d %+v", r.Status, r.Err)
		}
	})
	t.Run("broken function is reported", func(t *testing.T) {
		var found bool
		for _, a := range th.AppStatus() {
			if a.Name == "nodeapp" {
				found = true
				if len(a.Functions) != 1 || a.Functions[0] != "hello" || len(a.Broken) != 1 || !strings.Contains(a.Broken[0], "SyntaxError: Unexpected token") {
					t.Fatalf("nodeapp status: %+v", a)
				}
			}
		}
		if !found {
			t.Fatal("nodeapp missing from the app status")
		}
		hosttest.WaitFor(t, 0, "the broken function in the log", func() bool {
			return strings.Contains(th.Logs.String(), "SyntaxError: Unexpected token")
		})
	})
}

func TestAzureAppIndexingFailureIsLoud(t *testing.T) {
	th := startAzureHost(t, `  - {name: failing, runtime: failing-worker, codedir: "{codedir}"}
`)
	r := th.Do(t, http.MethodGet, "/api/whatever", nil, nil)
	if r.Status != http.StatusBadGateway || r.Err.Error.Type != "AppBroken" || !strings.Contains(r.Err.Error.Message, "ModuleNotFoundError") {
		t.Fatalf("got %d %+v, want 502 AppBroken with the worker's error", r.Status, r.Err)
	}
	// The healthy apps keep serving.
	if r := th.Do(t, http.MethodGet, "/api/HttpExample?name=x", nil, http.Header{"X-Test": {"python"}}); r.Status != 200 {
		t.Fatalf("a healthy app stopped serving: %d %s", r.Status, r.Body)
	}
	for _, a := range th.AppStatus() {
		if a.Name == "failing" && !strings.Contains(a.Error, "ModuleNotFoundError") {
			t.Fatalf("status of the failing app: %+v", a)
		}
	}
}

// Every worker of a function.json app must know each function by the same
// id: the host sends an invocation to whichever instance is free.
func TestAzureAppAcrossInstances(t *testing.T) {
	th := startAzureHost(t, "")
	var wg sync.WaitGroup
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if r := th.Do(t, http.MethodGet, "/api/HttpExample?name=slow&sleep=300ms", nil, http.Header{"X-Test": {"python"}}); r.Status != 200 {
				t.Errorf("got %d %s", r.Status, r.Body)
			}
		}()
	}
	wg.Wait()
	for _, a := range th.AppStatus() {
		if a.Name == "pyapp" && len(a.Instances) != 2 {
			t.Fatalf("pyapp has %d instances, want 2", len(a.Instances))
		}
	}
	for i := 0; i < 4; i++ {
		if r := th.Do(t, http.MethodGet, "/api/HttpExample?name=x", nil, http.Header{"X-Test": {"python"}}); r.Status != 200 || string(r.Body) != "Hello, x." {
			t.Fatalf("request %d: got %d %s", i, r.Status, r.Body)
		}
	}
}

// An app's host.json sets its route prefix, as under the Azure host.
func TestAzureAppRoutePrefix(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "host.json"), []byte("\ufeff{\"version\": \"2.0\", // comment\n \"extensions\": {\"http\": {\"routePrefix\": \"v1\"}}}"), 0o644); err != nil {
		t.Fatal(err)
	}
	th := startAzureHost(t, `  - {name: v1app, runtime: node-worker, codedir: "`+dir+`"}
`)
	if r := th.Do(t, http.MethodGet, "/v1/hello/bob", nil, http.Header{"X-Test": {"node"}}); r.Status != 201 || !strings.HasPrefix(string(r.Body), "hello bob via GET") {
		t.Fatalf("/v1/hello/bob: got %d %q", r.Status, r.Body)
	}
	if r := th.Do(t, http.MethodGet, "/v2/hello/bob", nil, nil); r.Status != http.StatusNotFound {
		t.Fatalf("/v2/hello/bob: got %d, want 404", r.Status)
	}
	// /function/ and /healthz are still the host's.
	if r := th.Do(t, http.MethodGet, "/healthz", nil, nil); r.Status != 200 {
		t.Fatalf("/healthz: got %d", r.Status)
	}
}
