// Package hosttest runs a real host behind the real HTTP trigger for tests,
// and checks that it leaves no process behind.
package hosttest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/polyfn/polyfn/internal/config"
	"github.com/polyfn/polyfn/internal/host"
	"github.com/polyfn/polyfn/internal/limits"
	"github.com/polyfn/polyfn/internal/testfs"
	"github.com/polyfn/polyfn/internal/testlog"
	httptrigger "github.com/polyfn/polyfn/internal/trigger/http"
)

// SyncBuffer is a log sink safe for concurrent writes.
type SyncBuffer = testlog.Buffer

// Host is a running host serving HTTP on URL.
type Host struct {
	*host.Host
	URL  string
	Logs *SyncBuffer
	// Config is the configuration the host runs.
	Config *config.Config
}

// Start starts a host for the YAML config text after replacing each key of
// repl by its value. The config file is taken to live in dir. When the test
// ends the host is closed and every process it started is checked gone.
func Start(t testing.TB, dir, yamlText string, repl ...string) *Host {
	t.Helper()
	// Workers run as users of their own (isolation.user auto, tests run as
	// root): the config's directory and those of repl must be theirs to read.
	Reachable(t, dir)
	for i := 1; i < len(repl); i += 2 {
		if strings.HasPrefix(repl[i], os.TempDir()+"/") {
			if st, err := os.Stat(repl[i]); err == nil && st.IsDir() {
				Reachable(t, repl[i])
			}
		}
	}
	text := strings.NewReplacer(repl...).Replace(yamlText)
	cfg, err := config.Parse(filepath.Join(dir, "polyfn.yaml"), []byte(text))
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	logs := &SyncBuffer{}
	h, err := host.New(cfg, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	h.Start()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		h.Close(context.Background())
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(logs, nil))
	srv := httptrigger.NewServer(cfg.HTTP, log)
	go func() {
		_ = srv.Serve(ln, httptrigger.NewHandlerWith(h, srv, h.MaxBody(), log, httptrigger.HandlerOptions{Config: cfg}))
	}()
	th := &Host{Host: h, URL: "http://" + ln.Addr().String(), Logs: logs, Config: cfg}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_ = srv.Shutdown(ctx)
		cancel()
		_ = srv.Close()
		h.Close(context.Background())
		WaitFor(t, 5*time.Second, "every worker process to be gone", func() bool {
			return len(Leftovers(h.RunDir())) == 0
		})
		if t.Failed() {
			t.Logf("host log:\n%s", logs.String())
		}
	})
	return th
}

// Reachable makes dir, and the directories above it up to the temporary
// directory, readable and searchable by every user (testfs.Reachable).
func Reachable(t testing.TB, dir string) { t.Helper(); testfs.Reachable(t, dir) }

// Writable returns dir made writable by every user (and reachable), for
// fake workers of users of their own that record what they did in it.
func Writable(t testing.TB, dir string) string {
	t.Helper()
	Reachable(t, dir)
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	return dir
}

// Self returns a path of the test binary that every user may run (the go
// command builds it in a private directory), for fake workers that run as
// users of their own. It is removed when the test ends.
func Self(t testing.TB) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "polyfn-bin-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, filepath.Base(self))
	if err := os.Link(self, bin); err == nil {
		return bin
	}
	in, err := os.Open(self)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(bin, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	return bin
}

// Leftovers returns the processes whose working directory lies under dir:
// workers run in private directories under the host's run directory, and
// whatever they start inherits it.
func Leftovers(dir string) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid))
		if err != nil || !strings.HasPrefix(cwd, dir+"/") {
			continue
		}
		if stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
			s := string(stat)
			if i := strings.LastIndexByte(s, ')'); i > 0 && len(s) > i+2 && s[i+2] == 'Z' {
				continue // exited, waiting to be reaped by its new parent
			}
		}
		pids = append(pids, pid)
	}
	return pids
}

// WaitFor polls cond until it holds, failing the test after timeout.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Warm calls fn with body until it answers anything but a timeout in the
// queue, for a minute at most, and returns that answer. A test whose
// function has a short timeout warms it first: the timeout counts the
// queueing, and a cold start on a loaded machine can use it up before the
// invocation reaches the worker.
func (h *Host) Warm(t testing.TB, fn, body string) Response {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		r := h.Call(t, fn, body)
		if r.Status != http.StatusGatewayTimeout || r.Err.Error.Type != "Timeout" ||
			!strings.Contains(r.Err.Error.Message, "queued") || time.Now().After(deadline) {
			return r
		}
	}
}

// Response is an HTTP response of the trigger.
type Response struct {
	Status int
	Body   []byte
	Header http.Header
	// Err is the decoded error document of a non-2xx response.
	Err httptrigger.ErrorBody
}

// Call POSTs body to /function/fn.
func (h *Host) Call(t testing.TB, fn, body string) Response {
	t.Helper()
	return h.Do(t, http.MethodPost, "/function/"+fn, []byte(body), nil)
}

// Do sends one request and checks the invariants of every trigger response:
// an invocation id header, and a JSON error document on errors.
func (h *Host) Do(t testing.TB, method, path string, body []byte, header http.Header) Response {
	t.Helper()
	req, err := http.NewRequest(method, h.URL+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	r := Response{Status: resp.StatusCode, Body: b, Header: resp.Header}
	if resp.StatusCode >= 300 {
		if err := json.Unmarshal(b, &r.Err); err != nil || r.Err.Error.Type == "" {
			t.Fatalf("%s %s: error response is not the JSON error document: %d %q", method, path, resp.StatusCode, b)
		}
	}
	if strings.HasPrefix(path, "/function/") && resp.Header.Get(httptrigger.InvocationIDHeader) == "" {
		t.Errorf("%s %s: response has no %s header", method, path, httptrigger.InvocationIDHeader)
	}
	return r
}

// RequireCgroups returns the limits backend of this machine. Where neither
// cgroup version is writable the test is skipped, except in CI, whose
// machines have them: there it fails.
func RequireCgroups(t testing.TB) string {
	t.Helper()
	l := limits.Acquire(slog.New(slog.DiscardHandler))
	kind := l.Kind()
	l.Release()
	if kind == limits.Rlimits {
		if os.Getenv("CI") != "" {
			t.Fatal("no writable cgroup (v2 or v1) on this CI machine: resource limits cannot be tested")
		}
		t.Skip("no writable cgroup (v2 or v1) here")
	}
	return kind
}

// FreeAddr is a loopback address with a port free a moment ago, for a
// listener the test starts in another process.
func FreeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
