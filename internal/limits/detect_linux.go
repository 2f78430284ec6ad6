package limits

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// detect chooses the backend: cgroup v2, else cgroup v1, else rlimits, and
// logs which one is in force.
func detect(log *slog.Logger) *Limiter {
	pid := os.Getpid()
	mounts, err := readMounts()
	var self []procCgroup
	if err == nil {
		var b []byte
		if b, err = os.ReadFile("/proc/self/cgroup"); err == nil {
			self = parseProcCgroup(string(b))
		}
	}
	if err != nil {
		log.Warn("resource limits: "+rlimitsLine, "reason", err.Error())
		return &Limiter{b: rlimitBackend{}, kind: Rlimits}
	}
	v2, err2 := detectV2(mounts, self, pid)
	if err2 == nil {
		l := &Limiter{b: v2, kind: CgroupV2, cpu: v2.cpu}
		log.Info("resource limits: cgroup v2 at "+v2.dir+cpuNote(l.cpu), "clone_into_cgroup", v2.cloneInto, "delegated_by_moving_host", !v2.owned)
		return l
	}
	v1, err1 := detectV1(mounts, self, pid)
	if err1 == nil {
		l := &Limiter{b: v1, kind: CgroupV1, cpu: v1.dirs["cpu"] != ""}
		dirs := []string{v1.dirs["memory"], v1.dirs["pids"]}
		if l.cpu {
			dirs = append(dirs, v1.dirs["cpu"])
		}
		log.Info("resource limits: cgroup v1 under "+strings.Join(dirs, ", ")+cpuNote(l.cpu), "cgroup_v2", err2.Error())
		return l
	}
	log.Warn("resource limits: "+rlimitsLine, "reason", fmt.Sprintf("cgroup v2: %v; cgroup v1: %v", err2, err1))
	return &Limiter{b: rlimitBackend{}, kind: Rlimits}
}

const rlimitsLine = "rlimits (fallback): memory as RLIMIT_AS, pids as RLIMIT_NPROC — per user, not per worker; cpu not enforced"

func cpuNote(cpu bool) string {
	if cpu {
		return ""
	}
	return " (no cpu controller: cpu not enforced)"
}

// mountInfo is one line of /proc/self/mountinfo.
type mountInfo struct {
	root, point, fstype string
	super               []string
}

func readMounts() ([]mountInfo, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	return parseMountInfo(string(b)), nil
}

// parseMountInfo parses /proc/self/mountinfo: "id parent major:minor root
// mountpoint options [optional fields] - fstype source superoptions".
func parseMountInfo(data string) []mountInfo {
	var out []mountInfo
	for _, line := range strings.Split(data, "\n") {
		f := strings.Fields(line)
		sep := -1
		for i, x := range f {
			if x == "-" && i >= 6 {
				sep = i
				break
			}
		}
		if sep < 0 || len(f) < sep+4 {
			continue
		}
		out = append(out, mountInfo{root: unescapeMount(f[3]), point: unescapeMount(f[4]), fstype: f[sep+1], super: strings.Split(f[sep+3], ",")})
	}
	return out
}

// unescapeMount undoes the octal escapes (\040 for a space) of mountinfo.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// procCgroup is one line of /proc/self/cgroup: "id:controllers:path".
type procCgroup struct {
	id    string
	ctrls []string
	path  string
}

func parseProcCgroup(data string) []procCgroup {
	var out []procCgroup
	for _, line := range strings.Split(data, "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		var ctrls []string
		if parts[1] != "" {
			ctrls = strings.Split(parts[1], ",")
		}
		out = append(out, procCgroup{id: parts[0], ctrls: ctrls, path: parts[2]})
	}
	return out
}

// groupDir is the directory of cgroup path (as /proc/self/cgroup names it)
// in mount m, whose root may be a subtree of the hierarchy.
func groupDir(m mountInfo, path string) (string, bool) {
	rel := path
	if m.root != "/" {
		if path != m.root && !strings.HasPrefix(path, m.root+"/") {
			return "", false
		}
		rel = strings.TrimPrefix(path, m.root)
	}
	return filepath.Join(m.point, rel), true
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// writeFile writes a cgroup control file.
func writeFile(path, value string) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(value)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %q to %s: %w", value, path, err)
	}
	return nil
}

func exists(path string) bool { _, err := os.Stat(path); return err == nil }

// readPids reads a cgroup.procs file.
func readPids(path string) []int {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		if n, err := strconv.Atoi(f); err == nil {
			pids = append(pids, n)
		}
	}
	return pids
}

// readKeyed returns the value of key in a "key value" control file
// (memory.events, memory.oom_control), or -1.
func readKeyed(path, key string) int64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && f[0] == key {
			if n, err := strconv.ParseInt(f[1], 10, 64); err == nil {
				return n
			}
		}
	}
	return -1
}

// readInt reads a control file holding one number.
func readInt(path string) int64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return -1
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return -1
	}
	return n
}

// killProcs kills every process listed in a cgroup.procs file until it is
// empty: processes forked while the others are being killed are caught by
// the next round.
func killProcs(procsFile string) {
	// The host itself is listed while one of its threads starts a worker
	// (cgroup v1): it is never killed.
	self := os.Getpid()
	for round := 0; round < 200; round++ {
		pids := readPids(procsFile)
		if len(pids) == 0 || len(pids) == 1 && pids[0] == self {
			return
		}
		for _, pid := range pids {
			if pid != self {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		time.Sleep(time.Millisecond)
	}
}

// removeTimeout bounds the retries of removeDir.
const removeTimeout = 2 * time.Second

// removeDir removes a cgroup directory, retrying while the kernel still
// counts exiting processes in it (EBUSY); kill is called between tries.
func removeDir(dir string, kill func()) error {
	deadline := time.Now().Add(removeTimeout)
	for {
		err := syscall.Rmdir(dir)
		switch {
		case err == nil, errors.Is(err, syscall.ENOENT):
			return nil
		case !errors.Is(err, syscall.EBUSY) || time.Now().After(deadline):
			return fmt.Errorf("remove cgroup %s: %w", dir, err)
		}
		kill()
		time.Sleep(10 * time.Millisecond)
	}
}

// removeTree removes an empty cgroup tree bottom-up, ignoring errors (a
// group that still has processes stays).
func removeTree(dir string) {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if e.IsDir() {
			removeTree(filepath.Join(dir, e.Name()))
		}
	}
	_ = syscall.Rmdir(dir)
}

// sweepStale removes the polyfn-<pid> groups under parent left behind by
// hosts that are gone (killed before they could remove them).
func sweepStale(parent string, self int) {
	entries, _ := os.ReadDir(parent)
	for _, e := range entries {
		n, ok := strings.CutPrefix(e.Name(), "polyfn-")
		pid, err := strconv.Atoi(n)
		if !ok || err != nil || !e.IsDir() || pid == self || exists(fmt.Sprintf("/proc/%d", pid)) {
			continue
		}
		removeTree(filepath.Join(parent, e.Name()))
	}
}

// kernelAtLeast reports whether the running kernel is at least major.minor.
func kernelAtLeast(major, minor int) bool {
	var u syscall.Utsname
	if err := syscall.Uname(&u); err != nil {
		return false
	}
	var b strings.Builder
	for _, c := range u.Release {
		if c == 0 {
			break
		}
		b.WriteByte(byte(c))
	}
	parts := strings.SplitN(b.String(), ".", 3)
	if len(parts) < 2 {
		return false
	}
	maj, _ := strconv.Atoi(parts[0])
	mnr, _ := strconv.Atoi(strings.TrimFunc(parts[1], func(r rune) bool { return r < '0' || r > '9' }))
	return maj > major || maj == major && mnr >= minor
}

// ProcessDirs returns the cgroup directories process pid is in, by
// controller ("" for the cgroup v2 group), for the hierarchies mounted here.
func ProcessDirs(pid int) (map[string]string, error) {
	mounts, err := readMounts()
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, c := range parseProcCgroup(string(b)) {
		for _, m := range mounts {
			switch {
			case c.id == "0" && m.fstype == "cgroup2":
				if d, ok := groupDir(m, c.path); ok {
					out[""] = d
				}
			case m.fstype == "cgroup":
				for _, ctrl := range c.ctrls {
					if contains(m.super, ctrl) {
						if d, ok := groupDir(m, c.path); ok {
							out[ctrl] = d
						}
					}
				}
			}
		}
	}
	return out, nil
}
