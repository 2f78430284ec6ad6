package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// statusKB reads one "Key:   N kB" line of /proc/PID/status (VmRSS, VmHWM).
func statusKB(pid int, key string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, key+":"); ok {
			f := strings.Fields(v)
			if len(f) == 0 {
				break
			}
			return strconv.ParseInt(f[0], 10, 64)
		}
	}
	return 0, fmt.Errorf("/proc/%d/status has no %s", pid, key)
}

// procStat returns the state and process group of pid from /proc/PID/stat.
func procStat(pid int) (state byte, pgrp int, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, errors.New("bad stat")
	}
	f := strings.Fields(string(b[i+1:])) // state ppid pgrp ...
	if len(f) < 3 {
		return 0, 0, errors.New("bad stat")
	}
	pgrp, err = strconv.Atoi(f[2])
	return f[0][0], pgrp, err
}

// pids lists the processes in /proc.
func pids() []int {
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range entries {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			out = append(out, pid)
		}
	}
	return out
}

// groupRSS sums VmRSS over the live processes of process group pgid (a
// worker runs in its own group, with whatever it started).
func groupRSS(pgid int) (kb int64, procs int) {
	for _, pid := range pids() {
		st, g, err := procStat(pid)
		if err != nil || g != pgid || st == 'Z' {
			continue
		}
		if v, err := statusKB(pid, "VmRSS"); err == nil {
			kb += v
			procs++
		}
	}
	return kb, procs
}

// resetPeak resets the peak RSS (VmHWM) of pid.
func resetPeak(pid int) error {
	return os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
}

// leftovers returns the live processes whose working directory lies under
// dir: workers run in private directories under their host's run
// directory, and whatever they start inherits it.
func leftovers(dir string) []int {
	var out []int
	for _, pid := range pids() {
		cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid))
		if err != nil || !strings.HasPrefix(cwd, dir+"/") {
			continue
		}
		if st, _, err := procStat(pid); err == nil && st == 'Z' {
			continue
		}
		out = append(out, pid)
	}
	return out
}

// tail keeps the last bytes written to it.
type tail struct {
	mu sync.Mutex
	b  []byte
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > 8<<10 {
		t.b = t.b[len(t.b)-4<<10:]
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.TrimSpace(string(t.b))
}

// server is a `polyfn serve` process started by the harness, for the rows
// that need the host alone in its process (memory, payload).
type server struct {
	cmd    *exec.Cmd
	addr   string
	tmp    string // the process's TMPDIR: its run directory lives under it
	stderr *tail
	done   chan struct{}
}

func (s *server) pid() int { return s.cmd.Process.Pid }

// startServer runs `<argv> serve -c file --listen 127.0.0.1:PORT
// --mqtt-listen 127.0.0.1:0 --state-dir tmp/state` with TMPDIR set to tmp,
// and waits until it answers /healthz.
func startServer(ctx context.Context, argv, env []string, file, tmp string) (*server, error) {
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return nil, err
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	// The embedded MQTT broker, unless the config turns it off, takes a
	// free port and a store of its own: one on 1883 (make run's) must not
	// fail the run.
	args := append(append([]string(nil), argv[1:]...), "serve", "-c", file, "--listen", addr, "--mqtt-listen", "127.0.0.1:0", "--state-dir", filepath.Join(tmp, "state"), "--log-level", "warn")
	cmd := exec.Command(argv[0], args...)
	cmd.Env = append(append(os.Environ(), "TMPDIR="+tmp), env...)
	cmd.Dir = filepath.Dir(file)
	cmd.SysProcAttr = childAttr()
	s := &server{cmd: cmd, addr: addr, tmp: tmp, stderr: &tail{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = s.stderr, s.stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s serve: %w", argv[0], err)
	}
	go func() { _ = cmd.Wait(); close(s.done) }()
	deadline := time.Now().Add(30 * time.Second)
	hc := &http.Client{Timeout: time.Second}
	for {
		resp, err := hc.Get("http://" + addr + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				hc.CloseIdleConnections()
				return s, nil
			}
		}
		select {
		case <-s.done:
			return nil, fmt.Errorf("polyfn serve -c %s exited: %s: %s", file, cmd.ProcessState, s.stderr)
		case <-ctx.Done():
			s.stop()
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.stop()
			return nil, fmt.Errorf("polyfn serve -c %s did not answer /healthz within 30s: %s", file, s.stderr)
		}
	}
}

// stop shuts the server down (SIGTERM: it drains and stops its workers),
// killing it if it takes more than a minute.
func (s *server) stop() {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(time.Minute):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
}

// freeAddr returns a loopback address with a port that was free a moment ago.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// cpuModel and memTotal describe the machine from /proc.
func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func memTotalMiB() float64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			if f := strings.Fields(v); len(f) > 0 {
				kb, _ := strconv.ParseInt(f[0], 10, 64)
				return mib(kb)
			}
		}
	}
	return 0
}
