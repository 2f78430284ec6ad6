package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/polyfn/polyfn/internal/host"
	"github.com/polyfn/polyfn/internal/hosttest"
)

// serveForShutdown runs the real binary on a function that sleeps for the
// number of seconds it is sent, with one instance up.
func serveForShutdown(t *testing.T) *served {
	t.Helper()
	requirePython(t)
	dir := tempDir(t)
	if err := os.MkdirAll(filepath.Join(dir, "fn"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "fn", "index.py"), "import time\n\ndef nap(event, context):\n    time.sleep(float(event))\n    return 'rested'\n")
	cfg := filepath.Join(dir, "polyfn.yaml")
	writeFile(t, cfg, "mqtt: {embedded: false}\nfunctions:\n  - {name: nap, handler: index.nap, codedir: fn, instances: {min: 1}}\n")
	s := serve(t, cfg)
	hosttest.WaitFor(t, 30*time.Second, "the nap instance", func() bool {
		status, _, err := post(s.base, "nap", "0")
		return err == nil && status == 200
	})
	return s
}

// waitInFlight waits until the host at base has n invocations of fn in
// flight, as GET /admin/functions says.
func waitInFlight(t *testing.T, base, fn string, n int) {
	t.Helper()
	hosttest.WaitFor(t, 10*time.Second, fmt.Sprintf("%d invocation(s) of %s in flight", n, fn), func() bool {
		resp, err := http.Get(base + "/admin/functions")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var st host.AdminStatus
		if json.NewDecoder(resp.Body).Decode(&st) != nil {
			return false
		}
		for _, f := range st.Functions {
			if f.Name == fn {
				return f.InFlight == n
			}
		}
		return false
	})
}

func post(base, fn, body string) (int, string, error) {
	resp, err := http.Post(base+"/function/"+fn, "application/json", strings.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

type reply struct {
	status int
	body   string
	err    error
}

// SIGTERM drains: an invocation in flight when polyfn is told to stop
// completes with its result, new connections are refused, and polyfn exits 0
// leaving no worker.
func TestSIGTERMDrainsInFlight(t *testing.T) {
	s := serveForShutdown(t)
	base, cmd := s.base, s.cmd
	res := make(chan reply, 1)
	go func() {
		status, b, err := post(base, "nap", "1.5")
		res <- reply{status, b, err}
	}()
	waitInFlight(t, base, "nap", 1) // the invocation is in the worker
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	r := <-res
	if r.err != nil || r.status != 200 || r.body != `"rested"` {
		t.Fatalf("in-flight invocation: %d %q %v, want 200 \"rested\"", r.status, r.body, r.err)
	}
	select {
	case <-s.done:
		if s.err != nil {
			t.Fatalf("polyfn exited with %v, want 0", s.err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("polyfn did not exit after the drain")
	}
	if _, _, err := post(base, "nap", "0"); err == nil {
		t.Error("polyfn still accepted a request after it stopped")
	}
	if out, _ := exec.Command("pgrep", "-g", fmt.Sprint(cmd.Process.Pid)).Output(); len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("processes left in polyfn's group: %s", out)
	}
}

// A second signal skips the drain: polyfn stops at once, failing the
// invocation still in flight instead of waiting for it.
func TestSecondSignalSkipsDrain(t *testing.T) {
	s := serveForShutdown(t)
	base, cmd, logs := s.base, s.cmd, s.logs
	res := make(chan reply, 1)
	go func() {
		status, b, err := post(base, "nap", "60")
		res <- reply{status, b, err}
	}()
	waitInFlight(t, base, "nap", 1)
	_ = cmd.Process.Signal(syscall.SIGTERM)
	hosttest.WaitFor(t, 10*time.Second, "the drain to begin", func() bool { return strings.Contains(logs.String(), "shutting down") })
	began := time.Now()
	_ = cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-s.done:
	case <-time.After(25 * time.Second):
		t.Fatal("polyfn still draining 25 s after the second signal; the nap lasts 60 s")
	}
	if !strings.Contains(logs.String(), "second signal") {
		t.Error("the log does not say the drain was skipped")
	}
	r := <-res
	if r.err == nil && r.status == 200 {
		t.Errorf("the 60 s invocation succeeded after %s; the second signal should have cut it", time.Since(began))
	}
	// Cut by the shutdown, not by a crash: 503, the host is shutting down.
	if r.err != nil || r.status != http.StatusServiceUnavailable || !strings.Contains(r.body, "shutting down") {
		t.Errorf("the cut invocation got %d %s (%v), want 503 saying the function is shutting down", r.status, r.body, r.err)
	}
}
