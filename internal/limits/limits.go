// Package limits enforces the resource limits of worker processes
// (limits: {memory, pids, cpu} of a function or app). One backend is chosen
// per host process, the first time a host needs it, and logged once:
//
//   - cgroup v2, when the host can create a child of its own group with the
//     memory and pids controllers: a group per worker with memory.max
//     (memory.swap.max 0), pids.max and cpu.max; workers start directly in
//     their group (clone3 CLONE_INTO_CGROUP);
//   - cgroup v1, when the host can create groups in the memory and pids
//     hierarchies: a group per worker in each, with memory.limit_in_bytes
//     (and memory.memsw.limit_in_bytes), pids.max and the CFS quota; a
//     worker is forked from a host thread moved into its groups for the
//     moment, so it too starts in them;
//   - rlimits otherwise: RLIMIT_AS and RLIMIT_NPROC, set on the worker right
//     after it started. They bound address space rather than memory, count
//     processes per user rather than per worker, and leave the CPU alone.
//
// Groups are named after the worker's instance, under polyfn-<pid> (the
// host's pid) below the host's own group, and removed once the worker and
// everything it started are gone.
package limits

import (
	"fmt"
	"log/slog"
	"regexp"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/polyfn/polyfn/internal/config"
)

// Backend names.
const (
	CgroupV2 = "cgroup v2"
	CgroupV1 = "cgroup v1"
	Rlimits  = "rlimits"
)

// Group confines one worker process and everything it starts.
type Group interface {
	// Start calls start, which starts the process with attr, so that the
	// process begins its life in the group: cgroup v2 has the kernel start
	// it there (clone3 CLONE_INTO_CGROUP); cgroup v1 forks it from a host
	// thread moved into the groups for the moment.
	Start(attr *syscall.SysProcAttr, start func() error) error
	// Attach is called right after the process started, before it is used:
	// rlimits sets its limits (and cgroup v2 on kernels before 5.7 moves it
	// into its group). On error the caller kills the process: it must not
	// run unconfined.
	Attach(pid int) error
	// Kill kills every process of the group, whatever process group or
	// session it moved to.
	Kill()
	// OOMKills is how many processes of the group the kernel has killed for
	// exceeding the memory limit so far. After Remove it keeps returning the
	// last count.
	OOMKills() int
	// PidsLimitHits is how many times a process or thread of the group
	// could not be created because the group was at its pids limit
	// (pids.events "max"), so far; 0 without cgroups. After Remove it keeps
	// returning the last count.
	PidsLimitHits() int
	// Remove kills what is left of the group and deletes it. It waits (a
	// little) for the processes to be gone.
	Remove() error
	// Dir is the group's directory (one of them, for cgroup v1), "" for
	// rlimits.
	Dir() string
}

// backend creates the groups of one kind.
type backend interface {
	newGroup(name string, l config.Limits) (Group, error)
	// close removes what the backend created at detection. It reports false
	// when it cannot (the host moved itself into it) and must be kept for
	// the life of the process.
	close() bool
}

// Limiter creates the groups that confine workers with the backend chosen
// for the host process.
type Limiter struct {
	b    backend
	kind string
	cpu  bool
	seq  atomic.Int64
}

// Kind names the backend in force: CgroupV2, CgroupV1 or Rlimits.
func (l *Limiter) Kind() string { return l.kind }

// EnforcesCPU reports whether limits.cpu is enforced.
func (l *Limiter) EnforcesCPU() bool { return l.cpu }

// New creates the group of one worker; name is its instance id.
func (l *Limiter) New(name string, lim config.Limits) (Group, error) {
	return l.b.newGroup(fmt.Sprintf("%s.%d", unsafeName.ReplaceAllString(name, "_"), l.seq.Add(1)), lim)
}

var unsafeName = regexp.MustCompile(`[^A-Za-z0-9_.-]`)

var (
	sharedMu   sync.Mutex
	shared     *Limiter
	sharedRefs int
)

// Acquire returns the host process's limiter, choosing and logging the
// backend the first time. Every Acquire must be paired with a Release; when
// the last one is released, the groups made at detection are removed.
func Acquire(log *slog.Logger) *Limiter {
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if shared == nil {
		shared = detect(log)
	}
	sharedRefs++
	return shared
}

// Release gives back a limiter from Acquire.
func (l *Limiter) Release() {
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if l != shared || sharedRefs == 0 {
		return
	}
	sharedRefs--
	if sharedRefs == 0 && l.b.close() {
		shared = nil
	}
}

// FormatSize writes a byte count the way the config does: 64Mi, 1Gi, 512Ki
// or plain bytes.
func FormatSize(n int64) string {
	for _, u := range []struct {
		suffix string
		size   int64
	}{{"Gi", 1 << 30}, {"Mi", 1 << 20}, {"Ki", 1 << 10}} {
		if n >= u.size && n%u.size == 0 {
			return fmt.Sprintf("%d%s", n/u.size, u.suffix)
		}
	}
	return fmt.Sprint(n)
}

// cpuPeriod is the CFS period used for limits.cpu, in microseconds.
const cpuPeriod = 100000

// cpuQuota is the CFS quota of limits.cpu per cpuPeriod, in microseconds.
func cpuQuota(cpu float64) int64 { return max(int64(cpu*cpuPeriod+0.5), 1000) }
