package host_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/polyfn/polyfn/internal/config"
	"github.com/polyfn/polyfn/internal/host"
	httptrigger "github.com/polyfn/polyfn/internal/trigger/http"
)

// testHost is a host serving a config through the real HTTP trigger.
type testHost struct {
	*host.Host
	URL    string
	pidDir string
	logs   *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startHost starts a host for the YAML config text; "{codedir}" in it is
// replaced by a temporary directory, "{self}" by this test binary and
// "{piddir}" by the directory where fake workers record their pids. The host
// is closed, and every recorded process checked gone, when the test ends.
func startHost(t *testing.T, yamlText string) *testHost {
	t.Helper()
	codedir, pidDir := t.TempDir(), t.TempDir()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	r := strings.NewReplacer("{codedir}", codedir, "{self}", self, "{piddir}", pidDir)
	cfg, err := config.Parse(t.TempDir()+"/polyfn.yaml", []byte(r.Replace(yamlText)))
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	logs := &syncBuffer{}
	h, err := host.New(cfg, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	h.Start()
	srv := httptest.NewServer(httptrigger.NewHandler(h, h.MaxBody(), slog.Default()))
	th := &testHost{Host: h, URL: srv.URL, pidDir: pidDir, logs: logs}
	t.Cleanup(func() {
		srv.Close()
		h.Close(context.Background())
		th.assertNoProcessLeft(t)
		if t.Failed() {
			t.Logf("host log:\n%s", logs.String())
		}
	})
	return th
}

// assertNoProcessLeft checks that every process a fake worker recorded is gone.
func (th *testHost) assertNoProcessLeft(t *testing.T) {
	t.Helper()
	entries, _ := os.ReadDir(th.pidDir)
	for _, e := range entries {
		pid, _ := strconv.Atoi(e.Name())
		if pid <= 0 {
			continue
		}
		waitFor(t, 5*time.Second, fmt.Sprintf("process %d to be gone", pid), func() bool {
			return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) || isZombie(pid)
		})
	}
}

// isZombie reports whether pid has exited and waits only for its parent
// (a grandchild re-parented to an init that has not reaped it yet).
func isZombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && len(s) > i+2 && s[i+2] == 'Z'
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type response struct {
	Status int
	Body   string
	Header http.Header
	Err    httptrigger.ErrorBody
}

func (th *testHost) call(t *testing.T, fn, body string) response {
	t.Helper()
	resp, err := http.Post(th.URL+"/function/"+fn, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatalf("POST %s: %v", fn, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	r := response{Status: resp.StatusCode, Body: string(b), Header: resp.Header}
	if resp.StatusCode >= 300 {
		if err := json.Unmarshal(b, &r.Err); err != nil {
			t.Fatalf("error response of %s is not the JSON error document: %q", fn, b)
		}
	}
	if resp.Header.Get(httptrigger.InvocationIDHeader) == "" {
		t.Errorf("response of %s has no %s header", fn, httptrigger.InvocationIDHeader)
	}
	return r
}

const faultConfig = `
runtimes:
  fake-ok:
    protocol: call
    command: ["{self}"]
    env: {POLYFN_FAKE_WORKER: ok, POLYFN_FAKE_PIDDIR: "{piddir}"}
    start_timeout: 2s
    stop_grace: 2s
  fake-exit:
    protocol: call
    command: ["{self}"]
    env: {POLYFN_FAKE_WORKER: exit, POLYFN_FAKE_PIDDIR: "{piddir}"}
  fake-never-ready:
    protocol: call
    command: ["{self}"]
    env: {POLYFN_FAKE_WORKER: never-ready, POLYFN_FAKE_PIDDIR: "{piddir}"}
    start_timeout: 500ms
  fake-garbage-listener:
    protocol: call
    command: ["{self}"]
    env: {POLYFN_FAKE_WORKER: garbage-listener, POLYFN_FAKE_PIDDIR: "{piddir}"}
    start_timeout: 500ms
  fake-garbage:
    protocol: call
    address: unix
    command: ["{self}"]
    env: {POLYFN_FAKE_WORKER: garbage, POLYFN_FAKE_PIDDIR: "{piddir}"}
functions:
  - {name: good, runtime: fake-ok, handler: h.h, codedir: "{codedir}"}
  - {name: crashy, runtime: fake-ok, handler: h.h, codedir: "{codedir}", concurrency: 4}
  - {name: slow, runtime: fake-ok, handler: h.h, codedir: "{codedir}", timeout: 300ms, concurrency: 1}
  - {name: exits, runtime: fake-exit, handler: h.h, codedir: "{codedir}"}
  - {name: never-ready, runtime: fake-never-ready, handler: h.h, codedir: "{codedir}"}
  - {name: garbage-listener, runtime: fake-garbage-listener, handler: h.h, codedir: "{codedir}"}
  - {name: garbage, runtime: fake-garbage, handler: h.h, codedir: "{codedir}"}
`

func TestFaults(t *testing.T) {
	th := startHost(t, faultConfig)
	good := func() {
		t.Helper()
		r := th.call(t, "good", "ping")
		if r.Status != 200 || r.Body != "fake:ping" {
			t.Fatalf("good function: got %d %q, want 200 \"fake:ping\"", r.Status, r.Body)
		}
	}
	good()

	t.Run("exits at start", func(t *testing.T) {
		r := th.call(t, "exits", "x")
		if r.Status != http.StatusBadGateway || r.Err.Error.Type != "WorkerStartFailed" {
			t.Fatalf("got %d %+v, want 502 WorkerStartFailed", r.Status, r.Err)
		}
		for _, want := range []string{"exit status 3", "fatal: cannot load handler module nope"} {
			if !strings.Contains(r.Err.Error.Message, want) {
				t.Errorf("error message %q does not contain %q", r.Err.Error.Message, want)
			}
		}
		good()
	})

	t.Run("never ready", func(t *testing.T) {
		r := th.call(t, "never-ready", "x")
		if r.Status != http.StatusBadGateway || !strings.Contains(r.Err.Error.Message, "not ready within start timeout 500ms") {
			t.Fatalf("got %d %+v, want 502 naming the start timeout", r.Status, r.Err)
		}
		good()
	})

	t.Run("speaks garbage", func(t *testing.T) {
		r := th.call(t, "garbage-listener", "x")
		if r.Status != http.StatusBadGateway || r.Err.Error.Type != "WorkerStartFailed" {
			t.Fatalf("got %d %+v, want 502 WorkerStartFailed", r.Status, r.Err)
		}
		good()
	})

	t.Run("prints garbage", func(t *testing.T) {
		r := th.call(t, "garbage", "hi")
		if r.Status != 200 || r.Body != "fake:hi" {
			t.Fatalf("got %d %q, want 200 \"fake:hi\"", r.Status, r.Body)
		}
		waitFor(t, 2*time.Second, "the overlong line in the log", func() bool {
			return strings.Contains(th.logs.String(), "function=garbage") && strings.Contains(th.logs.String(), strings.Repeat("x", 1000))
		})
		if strings.Contains(th.logs.String(), strings.Repeat("x", 65<<10)) {
			t.Error("an overlong worker line reached the log uncut")
		}
		good()
	})

	t.Run("dies mid-invocation", func(t *testing.T) {
		// Warm an instance, then have two invocations in flight on it when it dies.
		if r := th.call(t, "crashy", "warm"); r.Status != 200 {
			t.Fatalf("warm-up: %d %s", r.Status, r.Body)
		}
		var wg sync.WaitGroup
		wg.Add(1)
		var slowResp response
		go func() { defer wg.Done(); slowResp = th.call(t, "crashy", "sleep:5s") }()
		waitFor(t, 2*time.Second, "the slow invocation in flight", func() bool {
			for _, f := range th.Status() {
				if f.Name == "crashy" && len(f.Instances) == 1 && f.Instances[0].InFlight == 1 {
					return true
				}
			}
			return false
		})
		r := th.call(t, "crashy", "crash")
		wg.Wait()
		for _, got := range []response{r, slowResp} {
			if got.Status != http.StatusBadGateway || got.Err.Error.Type != "WorkerCrashed" {
				t.Errorf("in-flight invocation: got %d %+v, want 502 WorkerCrashed", got.Status, got.Err)
			}
		}
		// The next invocation gets a fresh instance.
		if r := th.call(t, "crashy", "again"); r.Status != 200 || r.Body != "fake:again" {
			t.Fatalf("after the crash: got %d %q, want 200", r.Status, r.Body)
		}
		good()
	})

	t.Run("hangs past the timeout", func(t *testing.T) {
		r := th.call(t, "slow", "hang")
		if r.Status != http.StatusGatewayTimeout || r.Err.Error.Type != "Timeout" {
			t.Fatalf("got %d %+v, want 504 Timeout", r.Status, r.Err)
		}
		// The slot came back: the next invocation on the one-slot instance runs.
		if r := th.call(t, "slow", "ok"); r.Status != 200 || r.Body != "fake:ok" {
			t.Fatalf("after the timeout: got %d %q, want 200", r.Status, r.Body)
		}
		good()
	})

	t.Run("unknown function", func(t *testing.T) {
		r := th.call(t, "nope", "x")
		if r.Status != http.StatusNotFound || r.Err.Error.Type != "FunctionNotFound" {
			t.Fatalf("got %d %+v, want 404 FunctionNotFound", r.Status, r.Err)
		}
	})
}
