package limits

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"syscall"

	"github.com/polyfn/polyfn/internal/config"
)

// cgroup1 creates the workers' groups under polyfn-<pid> below the host's
// own group in the memory, pids and (when mounted) cpu hierarchies.
type cgroup1 struct {
	// dirs maps a controller to the polyfn-<pid> directory in its hierarchy.
	dirs map[string]string
	// mounts maps a controller to its hierarchy's mount.
	mounts map[string]mountInfo
}

// v1Controllers are the hierarchies used, with the file that must exist in
// a group for the controller to be usable; memory and pids are required.
var v1Controllers = []struct{ name, file string }{
	{"memory", "memory.limit_in_bytes"},
	{"pids", "pids.max"},
	{"cpu", "cpu.cfs_quota_us"},
}

func detectV1(mounts []mountInfo, self []procCgroup, pid int) (*cgroup1, error) {
	c := &cgroup1{dirs: map[string]string{}, mounts: map[string]mountInfo{}}
	for _, ctrl := range v1Controllers {
		dir, mount, err := v1Dir(mounts, self, pid, ctrl.name, ctrl.file)
		if err != nil {
			if ctrl.name == "cpu" {
				continue // cpu is then not enforced, which the log line says
			}
			c.close()
			return nil, err
		}
		c.dirs[ctrl.name], c.mounts[ctrl.name] = dir, mount
	}
	return c, nil
}

// v1Dir creates polyfn-<pid> below the host's group in ctrl's hierarchy.
func v1Dir(mounts []mountInfo, self []procCgroup, pid int, ctrl, file string) (string, mountInfo, error) {
	var mount *mountInfo
	for i, m := range mounts {
		if m.fstype == "cgroup" && contains(m.super, ctrl) {
			mount = &mounts[i]
			break
		}
	}
	if mount == nil {
		return "", mountInfo{}, fmt.Errorf("no cgroup v1 hierarchy has the %s controller", ctrl)
	}
	path, found := "", false
	for _, c := range self {
		if contains(c.ctrls, ctrl) {
			path, found = c.path, true
		}
	}
	if !found {
		return "", mountInfo{}, fmt.Errorf("the host is in no %s group", ctrl)
	}
	parent, ok := groupDir(*mount, path)
	if !ok {
		return "", mountInfo{}, fmt.Errorf("the host's %s group %s is outside the mount at %s", ctrl, path, mount.point)
	}
	sweepStale(parent, pid)
	dir := filepath.Join(parent, fmt.Sprintf("polyfn-%d", pid))
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return "", mountInfo{}, fmt.Errorf("cannot create a %s group: %w", ctrl, err)
	}
	if !exists(filepath.Join(dir, file)) {
		_ = syscall.Rmdir(dir)
		return "", mountInfo{}, fmt.Errorf("%s has no %s", dir, file)
	}
	return dir, *mount, nil
}

func (c *cgroup1) close() bool {
	for _, d := range c.dirs {
		_ = syscall.Rmdir(d)
	}
	return true
}

func (c *cgroup1) newGroup(name string, l config.Limits) (Group, error) {
	g := &group1{dirs: map[string]string{}, mounts: c.mounts}
	// The pids group is always made: it lists the worker's processes for Kill.
	use := map[string]bool{"pids": true, "memory": l.Memory > 0, "cpu": l.CPU > 0 && c.dirs["cpu"] != ""}
	for _, ctrl := range v1Controllers {
		if !use[ctrl.name] {
			continue
		}
		dir := filepath.Join(c.dirs[ctrl.name], name)
		if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			g.rmdirs()
			return nil, err
		}
		g.dirs[ctrl.name] = dir
	}
	if err := g.set(l); err != nil {
		g.rmdirs()
		return nil, err
	}
	return g, nil
}

// group1 is one worker's groups, one per cgroup v1 hierarchy.
type group1 struct {
	dirs   map[string]string
	mounts map[string]mountInfo

	mu      sync.Mutex
	removed bool
	oom     int
	pidsMax int
}

func (g *group1) set(l config.Limits) error {
	var writes [][2]string
	if d := g.dirs["memory"]; d != "" {
		v := strconv.FormatInt(int64(l.Memory), 10)
		writes = append(writes, [2]string{filepath.Join(d, "memory.limit_in_bytes"), v})
		if f := filepath.Join(d, "memory.memsw.limit_in_bytes"); exists(f) {
			writes = append(writes, [2]string{f, v}) // no swapping past the limit either
		}
	}
	if l.Pids > 0 {
		writes = append(writes, [2]string{filepath.Join(g.dirs["pids"], "pids.max"), strconv.Itoa(l.Pids)})
	}
	if d := g.dirs["cpu"]; d != "" {
		writes = append(writes,
			[2]string{filepath.Join(d, "cpu.cfs_period_us"), strconv.Itoa(cpuPeriod)},
			[2]string{filepath.Join(d, "cpu.cfs_quota_us"), strconv.FormatInt(cpuQuota(l.CPU), 10)})
	}
	for _, w := range writes {
		if err := writeFile(w[0], w[1]); err != nil {
			return err
		}
	}
	return nil
}

func (g *group1) rmdirs() {
	for _, d := range g.dirs {
		_ = syscall.Rmdir(d)
	}
}

func (g *group1) Dir() string { return g.dirs["pids"] }

// Start forks the process from a thread of the host moved into the
// worker's groups for the moment (cgroup v1 places threads, not only
// processes): the child is born in them, before it runs a single
// instruction of its own. The thread then goes back to the host's groups;
// if it cannot, it is not given back to the Go runtime but ends with its
// goroutine, so no host code runs in a worker's group.
//
// While it is there, the thread counts against the worker's pids limit
// (one of it) and CPU quota (a fork's worth); memory is charged to a
// process, not a thread, and stays the host's.
func (g *group1) Start(_ *syscall.SysProcAttr, start func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		tid := strconv.Itoa(syscall.Gettid())
		home, err := g.threadHome()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		goHome := func() bool {
			ok := true
			for ctrl := range g.dirs {
				if err := writeFile(filepath.Join(home[ctrl], "tasks"), tid); err != nil {
					ok = false
				}
			}
			return ok
		}
		for _, ctrl := range v1Controllers {
			if d := g.dirs[ctrl.name]; d != "" {
				if err = writeFile(filepath.Join(d, "tasks"), tid); err != nil {
					break
				}
			}
		}
		if err == nil {
			err = start()
		}
		if !goHome() {
			errc <- errors.Join(err, errors.New("a host thread could not leave the worker's cgroup"))
			return // still locked: the thread ends with this goroutine
		}
		runtime.UnlockOSThread()
		errc <- err
	}()
	return <-errc
}

// threadHome returns the groups the calling thread is in, by controller.
func (g *group1) threadHome() (map[string]string, error) {
	b, err := os.ReadFile("/proc/thread-self/cgroup")
	if err != nil {
		return nil, err
	}
	home := map[string]string{}
	for _, c := range parseProcCgroup(string(b)) {
		for ctrl := range g.dirs {
			if contains(c.ctrls, ctrl) {
				if d, ok := groupDir(g.mounts[ctrl], c.path); ok {
					home[ctrl] = d
				}
			}
		}
	}
	for ctrl := range g.dirs {
		if home[ctrl] == "" {
			return nil, fmt.Errorf("the host thread's %s group is unknown", ctrl)
		}
	}
	return home, nil
}

// Attach has nothing to do: the process started in its groups.
func (g *group1) Attach(int) error { return nil }

func (g *group1) Kill() { killProcs(filepath.Join(g.dirs["pids"], "cgroup.procs")) }

func (g *group1) OOMKills() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	d := g.dirs["memory"]
	if g.removed || d == "" {
		return g.oom
	}
	n := readKeyed(filepath.Join(d, "memory.oom_control"), "oom_kill")
	if n < 0 && readInt(filepath.Join(d, "memory.failcnt")) > 0 {
		n = 1 // before Linux 4.13 there is no count: the group hit its limit
	}
	if n > int64(g.oom) {
		g.oom = int(n)
	}
	return g.oom
}

func (g *group1) PidsLimitHits() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	if d := g.dirs["pids"]; !g.removed && d != "" {
		if n := readKeyed(filepath.Join(d, "pids.events"), "max"); n > int64(g.pidsMax) {
			g.pidsMax = int(n)
		}
	}
	return g.pidsMax
}

func (g *group1) Remove() error {
	g.Kill()
	g.OOMKills()
	g.PidsLimitHits()
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.removed {
		return nil
	}
	var errs []error
	for _, d := range g.dirs {
		errs = append(errs, removeDir(d, g.Kill))
	}
	err := errors.Join(errs...)
	g.removed = err == nil
	return err
}
