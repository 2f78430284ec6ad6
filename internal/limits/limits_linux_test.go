package limits

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/polyfn/polyfn/internal/config"
	"github.com/polyfn/polyfn/internal/testfs"
)

func TestParseMountInfoAndProcCgroup(t *testing.T) {
	mounts := parseMountInfo(`25 30 0:23 / /sys rw,nosuid - sysfs sysfs rw
31 25 0:27 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
33 31 0:30 /docker/abc /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
34 25 0:31 / /mnt/with\040space rw - tmpfs tmpfs rw
`)
	if len(mounts) != 5 {
		t.Fatalf("got %d mounts: %+v", len(mounts), mounts)
	}
	if m := mounts[1]; m.fstype != "cgroup2" || m.point != "/sys/fs/cgroup" || m.root != "/" {
		t.Errorf("cgroup2 mount: %+v", m)
	}
	if m := mounts[2]; m.fstype != "cgroup" || !contains(m.super, "cpu") || !contains(m.super, "cpuacct") {
		t.Errorf("cpu mount: %+v", m)
	}
	if m := mounts[4]; m.point != "/mnt/with space" {
		t.Errorf("escaped mount point: %q", m.point)
	}
	self := parseProcCgroup("12:memory:/docker/abc/sub\n3:cpu,cpuacct:/\n0::/system.slice/polyfn.service\n")
	if len(self) != 3 || self[2].id != "0" || len(self[2].ctrls) != 0 || self[2].path != "/system.slice/polyfn.service" || !contains(self[1].ctrls, "cpuacct") {
		t.Fatalf("proc cgroup: %+v", self)
	}
	for _, tc := range []struct {
		m    mountInfo
		path string
		want string
	}{
		{mounts[1], "/system.slice/polyfn.service", "/sys/fs/cgroup/system.slice/polyfn.service"},
		{mounts[1], "/", "/sys/fs/cgroup"},
		{mounts[3], "/docker/abc/sub", "/sys/fs/cgroup/memory/sub"},
		{mounts[3], "/docker/abc", "/sys/fs/cgroup/memory"},
		{mounts[3], "/elsewhere", ""},
	} {
		got, ok := groupDir(tc.m, tc.path)
		if got != tc.want || ok != (tc.want != "") {
			t.Errorf("groupDir(%s, %s) = %q, %v; want %q", tc.m.point, tc.path, got, ok, tc.want)
		}
	}
}

func TestFormatSizeAndCPUQuota(t *testing.T) {
	for n, want := range map[int64]string{64 << 20: "64Mi", 1 << 30: "1Gi", 1536 << 10: "1536Ki", 50_000_000: "50000000"} {
		if got := FormatSize(n); got != want {
			t.Errorf("FormatSize(%d) = %s, want %s", n, got, want)
		}
	}
	for cpu, want := range map[float64]int64{0.5: 50000, 2: 200000, 0.01: 1000, 0.001: 1000} {
		if got := cpuQuota(cpu); got != want {
			t.Errorf("cpuQuota(%g) = %d, want %d", cpu, got, want)
		}
	}
}

// acquire returns this machine's limiter. Where neither cgroup version is
// writable the test is skipped, except in CI, whose machines have them.
func acquire(t *testing.T) *Limiter {
	t.Helper()
	var logs bytes.Buffer
	l := Acquire(slog.New(slog.NewTextHandler(&logs, nil)))
	t.Cleanup(l.Release)
	t.Logf("%s", strings.TrimSpace(logs.String()))
	if l.Kind() == Rlimits {
		if os.Getenv("CI") != "" {
			t.Fatal("no writable cgroup (v2 or v1) on this CI machine")
		}
		t.Skip("no writable cgroup (v2 or v1) here")
	}
	return l
}

// startIn starts argv confined by g, the way package worker does.
func startIn(t *testing.T, g Group, argv ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := g.Start(cmd.SysProcAttr, cmd.Start); err != nil {
		t.Fatal(err)
	}
	if err := g.Attach(cmd.Process.Pid); err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatal(err)
	}
	return cmd
}

// A group holds its limits, the process started in it and what that
// starts, even in a session of its own; Kill kills them all and Remove
// deletes the group; the last Release removes polyfn-<pid>.
func TestGroupConfinesKillsAndIsRemoved(t *testing.T) {
	l := acquire(t)
	g, err := l.New("fn-1", config.Limits{Memory: 64 << 20, Pids: 32, CPU: 0.5})
	if err != nil {
		t.Fatal(err)
	}
	// The shell starts a sleep in a session of its own: out of the process
	// group, still in the cgroup.
	cmd := startIn(t, g, "sh", "-c", "setsid sleep 1000 & exec sleep 1000")
	pid := cmd.Process.Pid
	dirs, err := ProcessDirs(pid)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{}
	switch l.Kind() {
	case CgroupV2:
		if dirs[""] != g.Dir() {
			t.Fatalf("process in %q, want %q", dirs[""], g.Dir())
		}
		files = map[string]string{"memory.max": strconv.Itoa(64 << 20), "pids.max": "32"}
		if l.EnforcesCPU() {
			files["cpu.max"] = "50000 100000"
		}
		for name, want := range files {
			if got := testfs.ReadTrim(t, filepath.Join(g.Dir(), name)); got != want {
				t.Errorf("%s = %q, want %q", name, got, want)
			}
		}
	case CgroupV1:
		want := map[string]map[string]string{
			"memory": {"memory.limit_in_bytes": strconv.Itoa(64 << 20)},
			"pids":   {"pids.max": "32"},
		}
		if l.EnforcesCPU() {
			want["cpu"] = map[string]string{"cpu.cfs_quota_us": "50000", "cpu.cfs_period_us": "100000"}
		}
		for ctrl, files := range want {
			dir := dirs[ctrl]
			if !strings.HasSuffix(dir, "/polyfn-"+strconv.Itoa(os.Getpid())+"/"+filepath.Base(g.Dir())) {
				t.Fatalf("process in %s group %q, not the worker's %s", ctrl, dir, filepath.Base(g.Dir()))
			}
			for name, v := range files {
				if got := testfs.ReadTrim(t, filepath.Join(dir, name)); got != v {
					t.Errorf("%s = %q, want %q", name, got, v)
				}
			}
		}
	}
	var procs []int
	deadline := time.Now().Add(5 * time.Second)
	for len(procs) < 2 && time.Now().Before(deadline) {
		procs = readPids(filepath.Join(g.Dir(), "cgroup.procs"))
		time.Sleep(5 * time.Millisecond)
	}
	if len(procs) != 2 {
		t.Fatalf("group holds %v, want the sleep and its escaped sibling", procs)
	}
	g.Kill()
	_ = cmd.Wait()
	if err := g.Remove(); err != nil {
		t.Fatal(err)
	}
	for _, p := range procs {
		if err := syscall.Kill(p, 0); err == nil {
			if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p)); !strings.Contains(string(b), ") Z ") {
				t.Errorf("process %d of the group survived Kill", p)
			}
		}
	}
	for _, d := range dirs {
		if strings.Contains(d, "/polyfn-") {
			if _, err := os.Stat(d); !os.IsNotExist(err) {
				t.Errorf("group %s still there after Remove", d)
			}
		}
	}
}

// The cgroup v2 mechanics — starting a process directly in its group,
// cgroup.kill, removal — on whatever cgroup2 hierarchy is mounted, even one
// without controllers (this machine's, in hybrid mode).
func TestCgroupV2StartsInGroupAndKills(t *testing.T) {
	mounts, err := readMounts()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	v2, err := detectV2(mounts, parseProcCgroup(string(b)), os.Getpid())
	if err == nil {
		v2.close()
		t.Skip("cgroup v2 is fully usable here: TestGroupConfinesKillsAndIsRemoved covers it")
	}
	dir := ""
	for _, m := range mounts {
		if m.fstype == "cgroup2" {
			for _, c := range parseProcCgroup(string(b)) {
				if c.id == "0" {
					dir, _ = groupDir(m, c.path)
				}
			}
		}
	}
	if dir == "" {
		t.Skip("no cgroup2 hierarchy mounted")
	}
	parent := filepath.Join(dir, fmt.Sprintf("polyfn-test-%d", os.Getpid()))
	if err := os.Mkdir(parent, 0o755); err != nil {
		t.Skipf("cannot create a cgroup v2 group: %v", err)
	}
	defer removeTree(parent)
	c := &cgroup2{dir: parent, cloneInto: kernelAtLeast(5, 7), owned: true}
	g, err := c.newGroup("fn-1.1", config.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	cmd := startIn(t, g, "sh", "-c", "setsid sleep 1000 & exec sleep 1000")
	dirs, err := ProcessDirs(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	if dirs[""] != g.Dir() {
		t.Fatalf("process in cgroup %q, want %q", dirs[""], g.Dir())
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(readPids(filepath.Join(g.Dir(), "cgroup.procs"))) < 2 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	procs := readPids(filepath.Join(g.Dir(), "cgroup.procs"))
	if len(procs) != 2 {
		t.Fatalf("group holds %v, want 2 processes", procs)
	}
	g.Kill()
	_ = cmd.Wait()
	if err := g.Remove(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(g.Dir()); !os.IsNotExist(err) {
		t.Fatalf("group %s still there: %v", g.Dir(), err)
	}
	if err := syscall.Rmdir(parent); err != nil {
		t.Fatal(err)
	}
}

// Without cgroups, the limits become the worker's RLIMIT_AS and, for a
// worker running as a user of its own, RLIMIT_NPROC; a worker running as the
// host's user keeps the host's RLIMIT_NPROC, which counts the host too.
func TestRlimitFallback(t *testing.T) {
	l := config.Limits{Memory: 64 << 20, Pids: 32, CPU: 1}
	start := func(cred *syscall.Credential) (string, error) {
		g, _ := rlimitBackend{}.newGroup("fn-1.1", l)
		cmd := exec.Command("sleep", "1000")
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL, Credential: cred}
		if err := g.Start(cmd.SysProcAttr, cmd.Start); err != nil {
			t.Fatal(err)
		}
		defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
		if err := g.Attach(cmd.Process.Pid); err != nil {
			return "", err
		}
		return testfs.ReadTrim(t, fmt.Sprintf("/proc/%d/limits", cmd.Process.Pid)), nil
	}
	own := func(cred *syscall.Credential) string {
		lim, err := start(cred)
		if err != nil {
			t.Fatal(err)
		}
		return lim
	}
	as := fmt.Sprintf("Max address space         %-20d %-20d bytes", 64<<20, 64<<20)
	nproc := fmt.Sprintf("Max processes             %-20d %-20d processes", 32, 32)
	lim := own(nil)
	if !strings.Contains(lim, as) || strings.Contains(lim, nproc) {
		t.Errorf("as the host's user: want %q and not %q in /proc/PID/limits:\n%s", as, nproc, lim)
	}
	if os.Getuid() != 0 {
		return // switching users needs root
	}
	lim, err := start(&syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{}})
	if err != nil {
		// Without CAP_SYS_RESOURCE the host may not set another user's
		// limits: the start fails, naming why, rather than run unconfined.
		if !strings.Contains(err.Error(), "CAP_SYS_RESOURCE") {
			t.Fatalf("as a user of its own: %v, want an error naming CAP_SYS_RESOURCE", err)
		}
		return
	}
	if !strings.Contains(lim, as) || !strings.Contains(lim, nproc) {
		t.Errorf("as a user of its own: want %q and %q in /proc/PID/limits:\n%s", as, nproc, lim)
	}
}
