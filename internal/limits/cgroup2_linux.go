package limits

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/polyfn/polyfn/internal/config"
)

// cgroup2 creates the workers' groups under dir, polyfn-<pid> below the
// host's own cgroup v2 group.
type cgroup2 struct {
	dir string
	cpu bool
	// cloneInto: the kernel starts workers in their group (Linux 5.7+);
	// else they are moved there right after they started.
	cloneInto bool
	// owned: dir can be removed when no host needs it any more; false when
	// the host moved itself into dir/host to delegate controllers.
	owned bool
}

// detectV2 sets up a cgroup v2 subtree for the workers below the host's
// own group.
func detectV2(mounts []mountInfo, self []procCgroup, pid int) (*cgroup2, error) {
	var mount *mountInfo
	for i, m := range mounts {
		if m.fstype == "cgroup2" && (mount == nil || m.point == "/sys/fs/cgroup") {
			mount = &mounts[i]
		}
	}
	if mount == nil {
		return nil, errors.New("no cgroup2 file system is mounted")
	}
	path, found := "", false
	for _, c := range self {
		if c.id == "0" && len(c.ctrls) == 0 {
			path, found = c.path, true
		}
	}
	if !found {
		return nil, errors.New("the host is in no cgroup v2 group")
	}
	dir, ok := groupDir(*mount, path)
	if !ok {
		return nil, fmt.Errorf("the host's group %s is outside the cgroup2 mount at %s", path, mount.point)
	}
	return setupV2(dir, pid)
}

// setupV2 creates dir/polyfn-<pid> with the memory, pids (and cpu)
// controllers enabled for its children.
//
// A group that holds processes cannot hand controllers down to its
// children (the no-internal-processes rule; the root group is exempt). If
// the host is alone in its group, it moves itself into polyfn-<pid>/host
// first, as a service with a delegated group is expected to; if other
// processes share its group, cgroup v2 cannot be used.
func setupV2(dir string, pid int) (*cgroup2, error) {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.controllers"))
	if err != nil {
		return nil, err
	}
	avail := strings.Fields(string(b))
	want := []string{"memory", "pids"}
	for _, c := range want {
		if !contains(avail, c) {
			return nil, fmt.Errorf("controller %s is not available in %s (cgroup.controllers: %q)", c, dir, strings.TrimSpace(string(b)))
		}
	}
	if contains(avail, "cpu") {
		want = append(want, "cpu")
	}
	sweepStale(dir, pid)
	top := filepath.Join(dir, fmt.Sprintf("polyfn-%d", pid))
	cg := &cgroup2{dir: top, cpu: contains(want, "cpu"), cloneInto: kernelAtLeast(5, 7), owned: true}
	if err := enableControllers(dir, want); err != nil {
		if !errors.Is(err, syscall.EBUSY) {
			return nil, fmt.Errorf("cannot enable controllers in %s (delegate the group to the host: systemd Delegate=yes): %w", dir, err)
		}
		procs := readPids(filepath.Join(dir, "cgroup.procs"))
		if len(procs) != 1 || procs[0] != pid {
			return nil, fmt.Errorf("%s holds %d processes besides the host, so it cannot hand controllers down: run polyfn in a group of its own (systemd: Delegate=yes)", dir, len(procs)-1)
		}
		hostDir := filepath.Join(top, "host")
		if err := os.MkdirAll(hostDir, 0o755); err != nil {
			return nil, err
		}
		if err := writeFile(filepath.Join(hostDir, "cgroup.procs"), strconv.Itoa(pid)); err != nil {
			removeTree(top)
			return nil, err
		}
		if err := enableControllers(dir, want); err != nil {
			_ = writeFile(filepath.Join(dir, "cgroup.procs"), strconv.Itoa(pid))
			removeTree(top)
			return nil, fmt.Errorf("cannot enable controllers in %s after moving the host to %s: %w", dir, hostDir, err)
		}
		cg.owned = false
	} else if err := os.Mkdir(top, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, err
	}
	if err := enableControllers(top, want); err != nil {
		if cg.owned {
			removeTree(top)
		}
		return nil, err
	}
	return cg, nil
}

// enableControllers enables ctrls in dir's cgroup.subtree_control.
func enableControllers(dir string, ctrls []string) error {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.subtree_control"))
	if err != nil {
		return err
	}
	have := strings.Fields(string(b))
	var add []string
	for _, c := range ctrls {
		if !contains(have, c) {
			add = append(add, "+"+c)
		}
	}
	if len(add) == 0 {
		return nil
	}
	return writeFile(filepath.Join(dir, "cgroup.subtree_control"), strings.Join(add, " "))
}

func (c *cgroup2) close() bool {
	if !c.owned {
		return false
	}
	_ = syscall.Rmdir(c.dir)
	return true
}

func (c *cgroup2) newGroup(name string, l config.Limits) (Group, error) {
	dir := filepath.Join(c.dir, name)
	err := os.Mkdir(dir, 0o755)
	if errors.Is(err, os.ErrExist) {
		// Left behind, empty, by an earlier process of the same pid or an
		// earlier limiter of this one: rmdir only removes an empty group.
		if syscall.Rmdir(dir) == nil {
			err = os.Mkdir(dir, 0o755)
		}
	}
	if err != nil {
		return nil, err
	}
	g := &group2{dir: dir, cloneInto: c.cloneInto}
	if err := g.set(l, c.cpu); err != nil {
		_ = syscall.Rmdir(dir)
		return nil, err
	}
	return g, nil
}

// group2 is one worker's cgroup v2 group.
type group2 struct {
	dir       string
	cloneInto bool

	mu      sync.Mutex
	removed bool
	oom     int
	pidsMax int
}

func (g *group2) set(l config.Limits, cpu bool) error {
	if l.Memory > 0 {
		if err := writeFile(filepath.Join(g.dir, "memory.max"), strconv.FormatInt(int64(l.Memory), 10)); err != nil {
			return err
		}
		if f := filepath.Join(g.dir, "memory.swap.max"); exists(f) {
			if err := writeFile(f, "0"); err != nil {
				return err
			}
		}
	}
	if l.Pids > 0 {
		if err := writeFile(filepath.Join(g.dir, "pids.max"), strconv.Itoa(l.Pids)); err != nil {
			return err
		}
	}
	if l.CPU > 0 && cpu {
		if err := writeFile(filepath.Join(g.dir, "cpu.max"), fmt.Sprintf("%d %d", cpuQuota(l.CPU), cpuPeriod)); err != nil {
			return err
		}
	}
	return nil
}

func (g *group2) Dir() string { return g.dir }

func (g *group2) Start(attr *syscall.SysProcAttr, start func() error) error {
	if !g.cloneInto {
		return start()
	}
	fd, err := syscall.Open(g.dir, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open cgroup %s: %w", g.dir, err)
	}
	defer syscall.Close(fd)
	attr.UseCgroupFD, attr.CgroupFD = true, fd
	return start()
}

func (g *group2) Attach(pid int) error {
	if g.cloneInto {
		return nil
	}
	return writeFile(filepath.Join(g.dir, "cgroup.procs"), strconv.Itoa(pid))
}

func (g *group2) Kill() {
	if err := writeFile(filepath.Join(g.dir, "cgroup.kill"), "1"); err != nil {
		killProcs(filepath.Join(g.dir, "cgroup.procs")) // before Linux 5.14
	}
}

func (g *group2) OOMKills() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.removed {
		if n := readKeyed(filepath.Join(g.dir, "memory.events"), "oom_kill"); n > int64(g.oom) {
			g.oom = int(n)
		}
	}
	return g.oom
}

func (g *group2) PidsLimitHits() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.removed {
		if n := readKeyed(filepath.Join(g.dir, "pids.events"), "max"); n > int64(g.pidsMax) {
			g.pidsMax = int(n)
		}
	}
	return g.pidsMax
}

func (g *group2) Remove() error {
	g.Kill()
	g.OOMKills()
	g.PidsLimitHits()
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.removed {
		return nil
	}
	err := removeDir(g.dir, g.Kill)
	g.removed = err == nil
	return err
}
