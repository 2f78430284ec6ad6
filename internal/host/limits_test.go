package host_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/polyfn/polyfn/internal/hosttest"
	"github.com/polyfn/polyfn/internal/limits"
)

const limitsConfig = `
runtimes:
  fake:
    protocol: call
    command: ["{self}"]
    env: {POLYFN_FAKE_WORKER: ok}
    start_timeout: 5s
    stop_grace: 2s
  fake-stream:
    protocol: stream
    discovery: config
    standby: true
    command: ["{self}"]
    env: {POLYFN_FAKE_WORKER: stream}
functions:
  - {name: hog, runtime: fake, handler: h.h, codedir: "{codedir}", limits: {memory: 64Mi}}
  - {name: bomb, runtime: fake, handler: h.h, codedir: "{codedir}", limits: {pids: 32}}
  - {name: throttled, runtime: fake, handler: h.h, codedir: "{codedir}", limits: {cpu: 0.5}}
  - {name: other, runtime: fake, handler: h.h, codedir: "{codedir}"}
  - {name: confined-stream, runtime: fake-stream, handler: h.h, codedir: "{codedir}", limits: {memory: 128Mi, pids: 64}}
`

// workerPid returns the pid of fn's only instance.
func workerPid(t *testing.T, th *hosttest.Host, fn string) int {
	t.Helper()
	for _, f := range th.Status() {
		if f.Name == fn && len(f.Instances) == 1 {
			return f.Instances[0].Pid
		}
	}
	t.Fatalf("%s has not exactly one instance: %+v", fn, th.Status())
	return 0
}

// workerGroup returns the directory of the cgroup that confines pid for
// controller (cgroup v1), or its cgroup v2 group, and checks it is one of
// the host's.
func workerGroup(t *testing.T, kind string, pid int, controller string) string {
	t.Helper()
	dirs, err := limits.ProcessDirs(pid)
	if err != nil {
		t.Fatal(err)
	}
	dir := dirs[controller]
	if kind == limits.CgroupV2 {
		dir = dirs[""]
	}
	if !strings.Contains(dir, fmt.Sprintf("/polyfn-%d/", os.Getpid())) {
		t.Fatalf("worker %d is not in a group of the host: %s group %q (all: %v)", pid, controller, dir, dirs)
	}
	return dir
}

// controlFile returns the trimmed content of a cgroup file.
func controlFile(t *testing.T, dir, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func TestMemoryHogIsKilledAtItsLimit(t *testing.T) {
	kind := hosttest.RequireCgroups(t)
	th := startHost(t, limitsConfig)
	if r := th.Warm(t, "hog", "ping"); r.Status != 200 {
		t.Fatalf("warm-up: %d %s", r.Status, r.Body)
	}
	pid := workerPid(t, th, "hog")
	dir := workerGroup(t, kind, pid, "memory")
	limitFile := map[string]string{limits.CgroupV1: "memory.limit_in_bytes", limits.CgroupV2: "memory.max"}[kind]
	if got := controlFile(t, dir, limitFile); got != strconv.Itoa(64<<20) {
		t.Fatalf("%s: %s, want %d", limitFile, got, 64<<20)
	}

	r := th.Call(t, "hog", "hog")
	if r.Status != http.StatusBadGateway || r.Err.Error.Type != "OutOfMemory" || !strings.Contains(r.Err.Error.Message, "64Mi") {
		t.Fatalf("got %d %+v (%s), want 502 OutOfMemory naming the 64Mi limit", r.Status, r.Err, r.Body)
	}
	t.Logf("error: %s", r.Err.Error.Message)
	fams := scrape(t, th)
	if n := value(fams, "polyfn_worker_oom_kills_total", map[string]string{"function": "hog"}); n < 1 {
		t.Errorf("polyfn_worker_oom_kills_total{function=hog} = %v, want at least 1", n)
	}
	if n := value(fams, "polyfn_invocations_total", map[string]string{"function": "hog", "outcome": "OutOfMemory"}); n != 1 {
		t.Errorf("polyfn_invocations_total{function=hog,outcome=OutOfMemory} = %v, want 1", n)
	}
	if logs := th.Logs.String(); !strings.Contains(logs, `msg="worker killed: out of memory" function=hog`) || !strings.Contains(logs, "limit=64Mi") {
		t.Errorf("no log record of the OOM kill with function and limit")
	}

	// The function works again, on a new instance; the dead one's group is gone.
	hosttest.WaitFor(t, 5*time.Second, "the killed worker's group to be removed", func() bool {
		_, err := os.Stat(dir)
		return os.IsNotExist(err)
	})
	if r := th.Call(t, "hog", "ping"); r.Status != 200 || string(r.Body) != "fake:ping" {
		t.Fatalf("after the OOM kill: got %d %q, want 200", r.Status, r.Body)
	}
	if again := workerPid(t, th, "hog"); again == pid {
		t.Fatalf("the invocation after the OOM kill ran on the killed worker %d", pid)
	}

	// The same through the stream protocol (on a worker that served once:
	// one that dies on its first invocation counts as a crash loop).
	if r := th.Warm(t, "confined-stream", "ping"); r.Status != 200 {
		t.Fatalf("stream warm-up: %d %s", r.Status, r.Body)
	}
	r = th.Call(t, "confined-stream", "hog")
	if r.Status != http.StatusBadGateway || r.Err.Error.Type != "OutOfMemory" || !strings.Contains(r.Err.Error.Message, "128Mi") {
		t.Fatalf("stream: got %d %+v (%s), want 502 OutOfMemory naming the 128Mi limit", r.Status, r.Err, r.Body)
	}
	if r := th.Call(t, "confined-stream", "ping"); r.Status != 200 || string(r.Body) != "stream:ping" {
		t.Fatalf("stream, after the OOM kill: got %d %q, want 200", r.Status, r.Body)
	}
}

// When the kernel kills a process the worker started, rather than the
// worker, the worker lives on; the kill is still logged and counted.
func TestOOMKillOfAWorkersChildIsReported(t *testing.T) {
	hosttest.RequireCgroups(t)
	th := startHost(t, limitsConfig)
	if r := th.Warm(t, "hog", "ping"); r.Status != 200 {
		t.Fatalf("warm-up: %d %s", r.Status, r.Body)
	}
	pid := workerPid(t, th, "hog")
	r := th.Call(t, "hog", "hog-child")
	if r.Status != 200 || string(r.Body) != "child: signal: killed" {
		t.Fatalf("got %d %q, want the function to see its child killed", r.Status, r.Body)
	}
	hosttest.WaitFor(t, 5*time.Second, "the OOM kill of the child to be reported", func() bool {
		return strings.Contains(th.Logs.String(), `msg="a process of the worker was killed: out of memory" function=hog`)
	})
	if n := value(scrape(t, th), "polyfn_worker_oom_kills_total", map[string]string{"function": "hog"}); n != 1 {
		t.Errorf("polyfn_worker_oom_kills_total{function=hog} = %v, want 1", n)
	}
	if r := th.Call(t, "hog", "ping"); r.Status != 200 || workerPid(t, th, "hog") != pid {
		t.Fatalf("the worker did not survive its child: %d %s", r.Status, r.Body)
	}
}

func TestForkBombStopsAtThePidsLimit(t *testing.T) {
	kind := hosttest.RequireCgroups(t)
	th := startHost(t, limitsConfig)
	if r := th.Warm(t, "bomb", "ping"); r.Status != 200 {
		t.Fatalf("warm-up: %d %s", r.Status, r.Body)
	}
	pid := workerPid(t, th, "bomb")
	dir := workerGroup(t, kind, pid, "pids")
	if got := controlFile(t, dir, "pids.max"); got != "32" {
		t.Fatalf("pids.max: %s, want 32", got)
	}

	// Sample the group's process count while the bomb goes off.
	stop := make(chan struct{})
	var sampler sync.WaitGroup
	peak := 0
	sampler.Add(1)
	go func() {
		defer sampler.Done()
		for {
			if b, err := os.ReadFile(filepath.Join(dir, "pids.current")); err == nil {
				if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && n > peak {
					peak = n
				}
			}
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()
	r := th.Call(t, "bomb", "forkbomb")
	events := controlFile(t, dir, "pids.events")
	close(stop)
	sampler.Wait()

	// Either the function got the fork error and answered, or the worker
	// could not go on (a Go runtime dies when it cannot make a thread).
	switch {
	case r.Status == 200:
		var n int
		if _, err := fmt.Sscanf(string(r.Body), "started %d:", &n); err != nil || n >= 32 || !strings.Contains(string(r.Body), "resource temporarily unavailable") {
			t.Fatalf("bomb: %q, want fewer than 32 processes started and the fork refused", r.Body)
		}
		t.Logf("bomb: %s", r.Body)
	case r.Status == http.StatusBadGateway && r.Err.Error.Type == "WorkerCrashed":
		t.Logf("bomb: the worker died at the limit: %s", r.Err.Error.Message)
	default:
		t.Fatalf("bomb: got %d %s", r.Status, r.Body)
	}
	if peak > 32 {
		t.Errorf("the worker's group held %d processes, above its limit of 32", peak)
	}
	if p, err := os.ReadFile(filepath.Join(dir, "pids.peak")); err == nil {
		if n, _ := strconv.Atoi(strings.TrimSpace(string(p))); n > 32 {
			t.Errorf("pids.peak %d is above the limit of 32", n)
		}
	}
	if !strings.Contains(events, "max ") || strings.Contains(events, "max 0") {
		t.Errorf("pids.events %q: no fork was refused at the limit", events)
	}
	t.Logf("peak %d processes; pids.events: %s", peak, events)

	// The host and the other functions are unaffected.
	if r := th.Call(t, "other", "ping"); r.Status != 200 || string(r.Body) != "fake:ping" {
		t.Fatalf("another function after the bomb: got %d %q", r.Status, r.Body)
	}
	// Closing the host leaves nothing: not the bomb's processes (one of them
	// in a session of its own), not the group.
	th.Close(context.Background())
	if left := hosttest.Leftovers(th.RunDir()); len(left) > 0 {
		t.Fatalf("processes left after close: %v", left)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("the worker's group %s is still there after close: %v", dir, err)
	}
}

func TestCPULimitIsSet(t *testing.T) {
	kind := hosttest.RequireCgroups(t)
	th := startHost(t, limitsConfig)
	if r := th.Call(t, "throttled", "ping"); r.Status != 200 {
		t.Fatalf("got %d %s", r.Status, r.Body)
	}
	pid := workerPid(t, th, "throttled")
	if kind == limits.CgroupV2 {
		if got := controlFile(t, workerGroup(t, kind, pid, ""), "cpu.max"); got != "50000 100000" {
			t.Fatalf("cpu.max: %q, want \"50000 100000\"", got)
		}
		return
	}
	dir := workerGroup(t, kind, pid, "cpu")
	if q, p := controlFile(t, dir, "cpu.cfs_quota_us"), controlFile(t, dir, "cpu.cfs_period_us"); q != "50000" || p != "100000" {
		t.Fatalf("cpu.cfs_quota_us %s, cpu.cfs_period_us %s; want 50000 per 100000", q, p)
	}
}

// A standby worker was started as the host's user and outside any group:
// functions with limits start workers of their own, and a runtime whose
// functions all have limits keeps no standby.
func TestConfinedFunctionsSkipTheStandby(t *testing.T) {
	kind := hosttest.RequireCgroups(t)
	th := startHost(t, limitsConfig)
	if sb := th.Standbys(); len(sb) != 0 {
		t.Fatalf("standby workers %+v kept for a runtime whose only function has limits", sb)
	}
	if r := th.Call(t, "confined-stream", "ping"); r.Status != 200 || string(r.Body) != "stream:ping" {
		t.Fatalf("got %d %q", r.Status, r.Body)
	}
	pid := workerPid(t, th, "confined-stream")
	dir := workerGroup(t, kind, pid, "pids")
	if got := controlFile(t, dir, "pids.max"); got != "64" {
		t.Fatalf("pids.max %s, want 64", got)
	}
}

func TestWorkersRunAsUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("switching users needs root")
	}
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Skip("no user nobody here")
	}
	daemon, err := user.LookupGroup("daemon")
	if err != nil {
		t.Skip("no group daemon here")
	}
	// The worker (this test binary) must be readable and executable by
	// nobody: go test builds it in a directory only root may enter.
	bin := hosttest.Self(t)
	limited := ""
	if l := limits.Acquire(slog.New(slog.DiscardHandler)); l.Kind() != limits.Rlimits {
		limited = ", limits: {memory: 256Mi, pids: 64}"
		l.Release()
	} else {
		l.Release()
	}
	th := hosttest.Start(t, t.TempDir(), `
runtimes:
  fake:
    protocol: call
    command: ["{bin}"]
    env: {POLYFN_FAKE_WORKER: ok}
  fake-unix:
    protocol: call
    address: unix
    command: ["{bin}"]
    env: {POLYFN_FAKE_WORKER: ok}
  fake-stream:
    protocol: stream
    discovery: config
    command: ["{bin}"]
    env: {POLYFN_FAKE_WORKER: stream}
functions:
  - {name: as-nobody, runtime: fake, handler: h.h, codedir: "{codedir}", user: nobody}
  - {name: as-nobody-unix, runtime: fake-unix, handler: h.h, codedir: "{codedir}", user: nobody, group: daemon{limited}}
  - {name: as-nobody-stream, runtime: fake-stream, handler: h.h, codedir: "{codedir}", user: "{uid}"}
  - {name: as-root, runtime: fake, handler: h.h, codedir: "{codedir}", user: root}
  - {name: as-own, runtime: fake, handler: h.h, codedir: "{codedir}"}
  - {name: as-own-stream, runtime: fake-stream, handler: h.h, codedir: "{codedir}"}
`, "{bin}", bin, "{codedir}", t.TempDir(), "{limited}", limited, "{uid}", nobody.Uid)

	owns := map[string]string{}
	for _, tc := range []struct {
		fn, payload, want string
		uid, gid          string
	}{
		{"as-nobody", "ids", fmt.Sprintf("%s %s []", nobody.Uid, nobody.Gid), nobody.Uid, nobody.Gid},
		{"as-nobody-unix", "ids", fmt.Sprintf("%s %s []", nobody.Uid, daemon.Gid), nobody.Uid, daemon.Gid},
		{"as-nobody-stream", "ping", "stream:ping", nobody.Uid, nobody.Gid},
		{"as-root", "ping", "fake:ping", "0", "0"},
		// No user named, a host running as root: a user id of its own.
		{"as-own", "ping", "fake:ping", "own", "own"},
		{"as-own-stream", "ping", "stream:ping", "own", "own"},
	} {
		r := th.Call(t, tc.fn, tc.payload)
		if r.Status != 200 || string(r.Body) != tc.want {
			t.Errorf("%s: got %d %q, want 200 %q", tc.fn, r.Status, r.Body, tc.want)
			continue
		}
		pid := workerPid(t, th, tc.fn)
		status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			t.Fatal(err)
		}
		ids := map[string]string{}
		for _, line := range strings.Split(string(status), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && (k == "Uid" || k == "Gid" || k == "Groups") {
				ids[k] = strings.Join(strings.Fields(v), " ")
			}
		}
		if tc.uid == "own" {
			f := strings.Fields(ids["Uid"])
			uid, _ := strconv.Atoi(f[0])
			if uid < 61184 || uid > 65519 || ids["Uid"] != strings.Repeat(f[0]+" ", 3)+f[0] || ids["Gid"] != ids["Uid"] || ids["Groups"] != "" {
				t.Errorf("%s: worker %d runs as Uid %q Gid %q Groups %q, want one id of 61184-65519 for all and no groups", tc.fn, pid, ids["Uid"], ids["Gid"], ids["Groups"])
			}
			owns[tc.fn] = f[0]
			continue
		}
		wantUid := strings.Repeat(tc.uid+" ", 4)
		wantGid := strings.Repeat(tc.gid+" ", 4)
		if ids["Uid"] != wantUid[:len(wantUid)-1] || ids["Gid"] != wantGid[:len(wantGid)-1] {
			t.Errorf("%s: worker %d runs as Uid %q Gid %q, want %s and %s", tc.fn, pid, ids["Uid"], ids["Gid"], tc.uid, tc.gid)
		}
		if tc.uid != "0" {
			if ids["Groups"] != "" {
				t.Errorf("%s: worker %d keeps supplementary groups %q", tc.fn, pid, ids["Groups"])
			}
			dir := filepath.Join(th.RunDir(), th.Status()[indexOf(th, tc.fn)].Instances[0].ID)
			if st, err := os.Stat(dir); err != nil || strconv.Itoa(int(st.Sys().(*syscall.Stat_t).Uid)) != tc.uid {
				t.Errorf("%s: private directory %s not owned by uid %s: %v", tc.fn, dir, tc.uid, err)
			}
		}
	}
	if owns["as-own"] != "" && owns["as-own"] == owns["as-own-stream"] {
		t.Errorf("two functions' workers share user id %s", owns["as-own"])
	}
}

func indexOf(th *hosttest.Host, fn string) int {
	for i, f := range th.Status() {
		if f.Name == fn {
			return i
		}
	}
	return -1
}

// A Go worker that cannot make a thread at its pids limit dies: the
// invocations it held fail at once with 502, the error names the limit and
// the runtime's own words, and the next invocation gets a fresh instance.
func TestWorkerThatCannotMakeAThreadFailsWithTheLimitNamed(t *testing.T) {
	hosttest.RequireCgroups(t)
	th := startHost(t, limitsConfig)
	if r := th.Warm(t, "bomb", "ping"); r.Status != 200 {
		t.Fatalf("warm-up: %d %s", r.Status, r.Body)
	}
	pid := workerPid(t, th, "bomb")
	if r := th.Call(t, "bomb", "forkbomb"); r.Status != 200 || !strings.Contains(string(r.Body), "resource temporarily unavailable") {
		t.Fatalf("bomb: got %d %s, want the fork refused at the limit", r.Status, r.Body)
	}
	r := th.Call(t, "bomb", "threads")
	if r.Status != http.StatusBadGateway || r.Err.Error.Type != "WorkerCrashed" ||
		// The host learns of the death from the process or from its
		// stream, whichever comes first.
		!strings.Contains(r.Err.Error.Message, "exited while running the invocation") && !strings.Contains(r.Err.Error.Message, "lost while running the invocation") ||
		!strings.Contains(r.Err.Error.Message, "reached its limit of 32 processes and threads (limits.pids)") {
		t.Fatalf("got %d %s, want 502 WorkerCrashed naming the pids limit", r.Status, r.Body)
	}
	t.Logf("error: %s", r.Err.Error.Message)
	// The record is written as the host reads the worker's end, which may
	// come after the invocation's answer.
	hosttest.WaitFor(t, 10*time.Second, "a log record of the refusals at the pids limit", func() bool {
		return strings.Contains(th.Logs.String(), `msg="worker at its pids limit: processes or threads could not be created" function=bomb`)
	})
	if r := th.Warm(t, "bomb", "ping"); r.Status != 200 || workerPid(t, th, "bomb") == pid {
		t.Fatalf("after the crash: got %d %s on worker %d, want 200 on a new one", r.Status, r.Body, workerPid(t, th, "bomb"))
	}
}
