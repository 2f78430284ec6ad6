package host_test

import (
	"bytes"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/polyfn/polyfn/internal/cli"
	"github.com/polyfn/polyfn/internal/hosttest"
)

const azappConfig = `
runtimes:
  mixed-worker:
    protocol: stream
    command: ["{self}"]
    env: {POLYFN_FAKE_WORKER: azapp-mixed}
  says-worker:
    protocol: stream
    command: ["{self}"]
    env: {POLYFN_FAKE_WORKER: azapp-says}
  stderr-worker:
    protocol: stream
    command: ["{self}"]
    env: {POLYFN_FAKE_WORKER: azapp-stderr}
functions:
  - {name: mixed, runtime: mixed-worker, codedir: "{app}", instances: {max: 2}}
`

// The app's host.json: a functionTimeout shorter than the entry's (30s by
// default), log levels per category, HTTP bounds and headers, and keys
// polyfn does not honour (Core Tools' template has the first two).
const azappHostJSON = `{
  "version": "2.0",
  "functionTimeout": "00:00:01",
  "logging": {
    "logLevel": {"default": "Information", "Function.hello.User": "Warning", "Function.hello": "Trace", "Worker": "Warning"},
    "applicationInsights": {"samplingSettings": {"isEnabled": true}}
  },
  "extensionBundle": {"id": "Microsoft.Azure.Functions.ExtensionBundle", "version": "[4.*, 5.0.0)"},
  "extensions": {"http": {"customHeaders": {"X-Content-Type-Options": "nosniff"}, "maxConcurrentRequests": 1, "maxOutstandingRequests": 2}},
  "concurrency": {"dynamicConcurrencyEnabled": true}
}`

func startAzapp(t *testing.T, hostJSON, extra string) (*hosttest.Host, string) {
	t.Helper()
	app := t.TempDir()
	if err := os.WriteFile(filepath.Join(app, "host.json"), []byte(hostJSON), 0o644); err != nil {
		t.Fatal(err)
	}
	return hosttest.Start(t, t.TempDir(), azappConfig+extra, "{self}", hosttest.Self(t), "{app}", app, "{codedir}", t.TempDir()), app
}

func logLines(th *hosttest.Host, parts ...string) []string {
	var out []string
	for _, line := range strings.Split(th.Logs.String(), "\n") {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all {
			out = append(out, line)
		}
	}
	return out
}

// An app with a queue-triggered function starts, serves its HTTP functions
// and names the queue function as unsupported, with its binding, in the
// log and the status; the host never loads it into the worker.
func TestAzureAppUnsupportedBindings(t *testing.T) {
	th, _ := startAzapp(t, azappHostJSON, "")
	if r := th.Do(t, http.MethodGet, "/api/hello/x", nil, nil); r.Status != 200 || string(r.Body) != "hello" {
		t.Fatalf("HTTP function of an app with a queue trigger: got %d %q %+v", r.Status, r.Body, r.Err)
	}
	var found bool
	for _, a := range th.AppStatus() {
		if a.Name != "mixed" {
			continue
		}
		found = true
		if len(a.Broken) != 0 {
			t.Errorf("broken functions (the queue function was loaded?): %q", a.Broken)
		}
		if len(a.Unsupported) != 1 || !strings.Contains(a.Unsupported[0], `function orders: unsupported binding queueTrigger "queueItem" (trigger)`) {
			t.Errorf("unsupported: %q, want the queue function with its binding", a.Unsupported)
		}
		if strings.Join(a.Functions, ",") != "hello,fails,slow,tick" {
			t.Errorf("functions: %q, want the HTTP and timer functions", a.Functions)
		}
	}
	if !found {
		t.Fatal("no status for app mixed")
	}
	if l := logLines(th, "app function unsupported", "function=orders", "queueTrigger"); len(l) != 1 {
		t.Errorf("the unsupported function is logged %d times, want once:\n%s", len(l), th.Logs.String())
	}
	if r := th.Do(t, http.MethodGet, "/api/orders", nil, nil); r.Status != http.StatusNotFound {
		t.Errorf("/api/orders: got %d, want 404", r.Status)
	}
}

// validate --index lists the unsupported function and the host.json keys
// polyfn does not honour, and does not count them as problems.
func TestValidateIndexListsUnsupported(t *testing.T) {
	app := t.TempDir()
	if err := os.WriteFile(filepath.Join(app, "host.json"), []byte(azappHostJSON), 0o644); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	hosttest.Reachable(t, app)
	cfg := filepath.Join(dir, "polyfn.yaml")
	text := strings.NewReplacer("{self}", hosttest.Self(t), "{app}", app).Replace(azappConfig)
	if err := os.WriteFile(cfg, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	code := cli.Main([]string{"validate", "-c", cfg, "--index", "--load=false"}, &out, &errOut)
	if code != 0 {
		t.Fatalf("validate --index exited %d:\n%s%s", code, out.String(), errOut.String())
	}
	for _, want := range []string{
		"app mixed: 4 functions: hello, fails, slow, tick",
		`app mixed: unsupported function (not served): function orders: unsupported binding queueTrigger "queueItem" (trigger)`,
		"app mixed: host.json keys polyfn does not honour: logging.applicationInsights, extensionBundle, concurrency",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("validate --index output lacks %q:\n%s", want, out.String())
		}
	}
}

// host.json's functionTimeout, shorter than the entry's timeout, ends the
// app's invocations and is named; the keys polyfn does not honour are
// logged once for the app, however many workers start.
func TestAzureAppHostJSON(t *testing.T) {
	th, app := startAzapp(t, azappHostJSON, "")
	r := th.Do(t, http.MethodGet, "/api/slow?ms=5000", nil, nil)
	if r.Status != http.StatusGatewayTimeout || !strings.Contains(r.Err.Error.Message, filepath.Join(app, "host.json")+" functionTimeout") ||
		!strings.Contains(r.Err.Error.Message, "1s") {
		t.Fatalf("got %d %+v, want 504 naming host.json's functionTimeout of 1s", r.Status, r.Err)
	}
	if r := th.Do(t, http.MethodGet, "/api/hello", nil, nil); r.Header.Get("X-Content-Type-Options") != "nosniff" {
		t.Errorf("customHeaders: response headers %v", r.Header)
	}
	if l := logLines(th, "keys polyfn does not honour", "app=mixed"); len(l) != 1 ||
		!strings.Contains(l[0], `keys="logging.applicationInsights, extensionBundle, concurrency"`) {
		t.Errorf("ignored keys logged %d times, want once with the three keys:\n%s", len(l), strings.Join(l, "\n"))
	}
}

// maxConcurrentRequests (1) lets one request run at a time while the
// others wait; maxOutstandingRequests (2) answers 429 past two running or
// waiting. The worker says how many invocations of slow it runs at once.
func TestAzureAppRequestBounds(t *testing.T) {
	th, _ := startAzapp(t, `{"extensions": {"http": {"maxConcurrentRequests": 1, "maxOutstandingRequests": 2}}}`, "")
	type answer struct {
		status int
		body   string
	}
	answers := make(chan answer, 3)
	get := func() {
		r := th.Do(t, http.MethodGet, "/api/slow?ms=1500", nil, nil)
		answers <- answer{r.Status, string(r.Body) + r.Err.Error.Message}
	}
	go get()
	hosttest.WaitFor(t, 10*time.Second, "the first request running", func() bool {
		for _, a := range th.AppStatus() {
			if a.Name == "mixed" {
				return a.InFlight == 1
			}
		}
		return false
	})
	go get()
	go get()
	var ok, refused int
	for i := 0; i < 3; i++ {
		a := <-answers
		switch {
		case a.status == 200 && a.body == "slow running=1":
			ok++
		case a.status == http.StatusTooManyRequests && strings.Contains(a.body, "host.json extensions.http.maxOutstandingRequests"):
			refused++
		default:
			t.Errorf("unexpected answer %d %q", a.status, a.body)
		}
	}
	if ok != 2 || refused != 1 {
		t.Errorf("%d served one at a time and %d refused, want 2 and 1", ok, refused)
	}
}

// logging.logLevel filters the worker's RpcLogs by the categories the
// Azure host logs them under: the function's user logs
// (Function.hello.User: Warning and above), the worker's own during the
// invocation (Function.hello: all), and outside invocations (Worker:
// Warning and above).
func TestAzureAppLogLevels(t *testing.T) {
	th, _ := startAzapp(t, azappHostJSON, "")
	r := th.Do(t, http.MethodGet, "/api/hello", nil, nil)
	if r.Status != 200 {
		t.Fatalf("got %d", r.Status)
	}
	id := r.Header.Get("X-Polyfn-Invocation-Id")
	for _, c := range []struct {
		msg  string
		want bool
	}{
		{"user-Information-" + id, false}, {"user-Debug-" + id, false}, {"user-Warning-" + id, true}, {"user-Critical-" + id, true},
		{"system-Trace-" + id, true}, {"system-Information-" + id, true},
		{"worker-debug-at-start", false}, {"worker-warning-at-start", true},
	} {
		if got := len(logLines(th, c.msg)) > 0; got != c.want {
			t.Errorf("%s logged: %v, want %v", c.msg, got, c.want)
		}
	}
}

// A failed invocation of an app function is logged with its function,
// route, status, invocation id, error type and the worker's stack trace.
// A 405 names the methods that are allowed.
func TestAzureAppFailureLogAndAllow(t *testing.T) {
	th, _ := startAzapp(t, azappHostJSON, "")
	r := th.Do(t, http.MethodGet, "/api/fails", nil, nil)
	if r.Status != 500 || r.Err.Error.Type != "TypeError" || r.Err.Error.Message != "Cannot read properties of undefined (reading 'id')" ||
		strings.Contains(string(r.Body), "index.js:7") {
		t.Fatalf("got %d %s, want 500 TypeError without the stack", r.Status, r.Body)
	}
	id := r.Header.Get("X-Polyfn-Invocation-Id")
	l := logLines(th, "invocation="+id, "function=fails")
	if len(l) != 1 {
		t.Fatalf("%d log records of the failed invocation, want 1:\n%s", len(l), th.Logs.String())
	}
	for _, want := range []string{"app=mixed", "route=/api/fails", "status=500", "error_type=TypeError", `stack="TypeError: Cannot read`, "at fails (/app/dist/index.js:7:21)"} {
		if !strings.Contains(l[0], want) {
			t.Errorf("the failure record lacks %s:\n%s", want, l[0])
		}
	}
	r = th.Do(t, http.MethodDelete, "/api/hello/x", nil, nil)
	if r.Status != http.StatusMethodNotAllowed || r.Header.Get("Allow") != "GET, POST" {
		t.Fatalf("DELETE: got %d Allow %q, want 405 with Allow: GET, POST", r.Status, r.Header.Get("Allow"))
	}
}

// A broken app's 502 and status carry the worker's own reason: what it
// logged (an Error RpcLog), else the last lines of its stderr that are not
// a stack trace's.
func TestAzureAppBrokenCarriesWorkerReason(t *testing.T) {
	th, _ := startAzapp(t, azappHostJSON, `  - {name: says, runtime: says-worker, codedir: "{codedir}"}
  - {name: printed, runtime: stderr-worker, codedir: "{codedir}"}
`)
	for app, reason := range map[string]string{
		"says":    `the worker said: Worker was unable to load entry point "dist/index.js": Cannot find module 'express'`,
		"printed": "the worker's last stderr lines: Error: Cannot find module 'left-pad' from /app/dist/index.js | Require stack:",
	} {
		// The app is tried again on each request: the stderr line may be
		// read after the first attempt's error is made.
		hosttest.WaitFor(t, 10*time.Second, "app "+app+"'s 502 with the worker's reason", func() bool {
			r := th.Do(t, http.MethodGet, "/api/nothing", nil, nil)
			return r.Status == http.StatusBadGateway && r.Err.Error.Type == "AppBroken" && strings.Contains(r.Err.Error.Message, "app "+app+": ") &&
				strings.Contains(r.Err.Error.Message, reason)
		})
		for _, a := range th.AppStatus() {
			if a.Name == app && !strings.Contains(a.Error, reason) {
				t.Errorf("status of %s: %q lacks %q", app, a.Error, reason)
			}
		}
	}
}

// A functionTimeout longer than the entry's timeout does not extend it:
// the smaller applies, and the 504 names the entry's key.
func TestAzureAppEntryTimeoutBoundsFunctionTimeout(t *testing.T) {
	app := t.TempDir()
	if err := os.WriteFile(filepath.Join(app, "host.json"), []byte(`{"functionTimeout": "00:10:00"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	th := hosttest.Start(t, t.TempDir(), `
runtimes:
  mixed-worker:
    protocol: stream
    command: ["{self}"]
    env: {POLYFN_FAKE_WORKER: azapp-mixed}
functions:
  - {name: mixed, runtime: mixed-worker, codedir: "{app}", timeout: 1s}
`, "{self}", hosttest.Self(t), "{app}", app)
	th.Do(t, http.MethodGet, "/api/hello", nil, nil) // the worker is up
	r := th.Do(t, http.MethodGet, "/api/slow?ms=5000", nil, nil)
	if r.Status != http.StatusGatewayTimeout || !strings.Contains(r.Err.Error.Message, "1s (functions[0].timeout") {
		t.Fatalf("got %d %+v, want 504 naming functions[0].timeout of 1s", r.Status, r.Err)
	}
}
