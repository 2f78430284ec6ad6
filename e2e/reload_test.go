package e2e

import (
	"bytes"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/polyfn/polyfn/internal/hosttest"
)

// served is a running `polyfn serve` of the real binary.
type served struct {
	base string
	cmd  *exec.Cmd
	logs *hosttest.SyncBuffer
	// done is closed when polyfn has exited; err is then how it ended.
	done chan struct{}
	err  error
}

// serve builds and runs the real binary on cfg, waits until it answers
// /healthz, and stops it (SIGTERM, then SIGKILL to its group) at cleanup.
// args come after its own flags, and override them.
func serve(t *testing.T, cfg string, args ...string) *served {
	t.Helper()
	return serveBinary(t, buildPolyfn(t), cfg, args...)
}

// serveBinary is serve with a binary buildPolyfn built.
func serveBinary(t *testing.T, bin, cfg string, args ...string) *served {
	t.Helper()
	// polyfn listens on a port of the kernel's choosing, named in its log
	// (a port picked here and closed could be taken before polyfn listens).
	// The embedded MQTT broker (on unless the config turns it off) listens
	// on a free port too and keeps its store in a directory of the test's
	// (args may name others): tests run in parallel with each other and
	// with make run.
	cmd := exec.Command(bin, append([]string{"serve", "-c", cfg, "--listen", "127.0.0.1:0", "--mqtt-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--state-dir", t.TempDir()}, args...)...)
	s := &served{cmd: cmd, logs: &hosttest.SyncBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = s.logs, s.logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { s.err = cmd.Wait(); close(s.done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.done:
		case <-time.After(20 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-s.done
		}
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // anything left in its group
		if t.Failed() {
			t.Logf("polyfn output:\n%s", s.logs.String())
		}
	})
	hosttest.WaitFor(t, 15*time.Second, "polyfn to log its address", func() bool {
		m := servingAddr.FindStringSubmatch(s.logs.String())
		if m != nil {
			s.base = "http://" + m[1]
		}
		return m != nil
	})
	hosttest.WaitFor(t, 15*time.Second, "polyfn to answer /healthz", func() bool {
		resp, err := http.Get(s.base + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	return s
}

// servingAddr finds the address in polyfn's "polyfn serving" log record.
var servingAddr = regexp.MustCompile(`msg="polyfn serving" .*?listen=(\S+)`)

// startServe runs the real binary on cfg and returns its base URL and logs.
func startServe(t *testing.T, cfg string, args ...string) (string, *exec.Cmd, *hosttest.SyncBuffer) {
	t.Helper()
	s := serve(t, cfg, args...)
	return s.base, s.cmd, s.logs
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Post(url, "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(bytes.TrimSpace(b))
}

const versionFn = "def handler(event, context):\n    return %q\n"

// versionApp makes a project of one Python function, v (v.handler in fn/,
// answering "one"), and its config; extra is put in the function's entry
// before its handler. It returns the codedir and the config file.
func versionApp(t *testing.T, extra string) (code, cfg string) {
	t.Helper()
	dir := tempDir(t)
	code = filepath.Join(dir, "fn")
	if err := os.MkdirAll(code, 0o755); err != nil {
		t.Fatal(err)
	}
	writeVersion(t, code, "one")
	cfg = filepath.Join(dir, "polyfn.yaml")
	writeFile(t, cfg, "functions:\n  - {name: v, "+extra+"handler: v.handler, codedir: fn}\n")
	return code, cfg
}

// writeVersion makes code's function v answer version.
func writeVersion(t *testing.T, code, version string) {
	t.Helper()
	writeFile(t, filepath.Join(code, "v.py"), strings.ReplaceAll(versionFn, "%q", strconv.Quote(version)))
}

func TestReload(t *testing.T) {
	requirePython(t)
	code, cfg := versionApp(t, "")

	t.Run("SIGHUP", func(t *testing.T) {
		base, cmd, logs := startServe(t, cfg)
		if got := get(t, base+"/function/v"); got != `"one"` {
			t.Fatalf("got %s", got)
		}
		writeVersion(t, code, "two")
		_ = cmd.Process.Signal(syscall.SIGHUP)
		hosttest.WaitFor(t, 15*time.Second, "the reloaded code to answer", func() bool { return get(t, base+"/function/v") == `"two"` })

		// A broken config leaves the running one serving, and says why.
		writeFile(t, cfg, "functions:\n  - {name: v, handler: v.handler, codedir: nowhere}\n")
		_ = cmd.Process.Signal(syscall.SIGHUP)
		hosttest.WaitFor(t, 10*time.Second, "the reload error in the log", func() bool {
			return strings.Contains(logs.String(), "the config is invalid; the running one stays") && strings.Contains(logs.String(), "codedir: directory")
		})
		if got := get(t, base+"/function/v"); got != `"two"` {
			t.Fatalf("after a broken reload: got %s, want the running config to keep serving", got)
		}
		writeFile(t, cfg, "functions:\n  - {name: v, handler: v.handler, codedir: fn}\n")
	})

	t.Run("watch", func(t *testing.T) {
		writeVersion(t, code, "three")
		base, _, _ := startServe(t, cfg, "--watch")
		if got := get(t, base+"/function/v"); got != `"three"` {
			t.Fatalf("got %s", got)
		}
		writeVersion(t, code, "four")
		hosttest.WaitFor(t, 15*time.Second, "--watch to reload the changed code", func() bool { return get(t, base+"/function/v") == `"four"` })
	})
}

// TestCounterSurvivesSIGHUP checks that a reload keeps the process's
// metrics: the invocation counter of a function that stays goes on from
// where it was, instead of starting again from zero.
func TestCounterSurvivesSIGHUP(t *testing.T) {
	requirePython(t)
	code, cfg := versionApp(t, "")
	base, cmd, logs := startServe(t, cfg)
	const series = `polyfn_invocations_total{function="v",outcome="success",trigger="http"}`
	for range 3 {
		if got := get(t, base+"/function/v"); got != `"one"` {
			t.Fatalf("got %s", got)
		}
	}
	if n := metricValue(t, base, series); n != 3 {
		t.Fatalf("%s is %d before the reload, want 3", series, n)
	}
	writeVersion(t, code, "two")
	_ = cmd.Process.Signal(syscall.SIGHUP)
	hosttest.WaitFor(t, 15*time.Second, "the reload", func() bool { return strings.Contains(logs.String(), "reloaded: the new config serves") })
	if n := metricValue(t, base, series); n != 3 {
		t.Errorf("%s is %d right after the reload, want 3: the reload reset it", series, n)
	}
	if got := get(t, base+"/function/v"); got != `"two"` {
		t.Fatalf("after the reload: got %s, want the new code", got)
	}
	if n := metricValue(t, base, series); n != 4 {
		t.Errorf("%s is %d after one more invocation, want 4", series, n)
	}
}
