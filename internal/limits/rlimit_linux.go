package limits

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"github.com/polyfn/polyfn/internal/config"
)

// rlimitNproc is RLIMIT_NPROC, which package syscall does not name.
const rlimitNproc = 6

// rlimitBackend is the fallback without writable cgroups: limits.memory
// becomes RLIMIT_AS (address space, which is more than the memory used:
// runtimes that reserve large address ranges, like Node.js, need a
// generous limit), limits.pids RLIMIT_NPROC (counted over every process of
// the worker's user, and not enforced for root), limits.cpu nothing.
//
// The limits are set with prlimit(2) right after the worker started, not
// before it runs: Go's os/exec has no hook between fork and exec, and
// re-executing the host binary as a shim to call setrlimit would cost an
// exec per worker. Until prlimit (microseconds, spent in the new program's
// loader) the worker runs under the host's limits; what it allocates or
// starts afterwards counts against its own.
type rlimitBackend struct{}

func (rlimitBackend) close() bool { return true }

func (rlimitBackend) newGroup(_ string, l config.Limits) (Group, error) {
	return &rlimitGroup{l: l}, nil
}

type rlimitGroup struct{ l config.Limits }

func (g *rlimitGroup) Dir() string { return "" }

func (g *rlimitGroup) Start(_ *syscall.SysProcAttr, start func() error) error { return start() }

func (g *rlimitGroup) Attach(pid int) error {
	if err := g.attach(pid); err != nil {
		if errors.Is(err, syscall.EPERM) && uidOf(pid) != os.Getuid() {
			return fmt.Errorf("%w: setting the limits of a worker that runs as another user needs CAP_SYS_RESOURCE, which the host lacks (or use cgroups)", err)
		}
		return err
	}
	return nil
}

func (g *rlimitGroup) attach(pid int) error {
	if g.l.Memory > 0 {
		if err := prlimit(pid, syscall.RLIMIT_AS, uint64(g.l.Memory)); err != nil {
			return fmt.Errorf("set RLIMIT_AS: %w", err)
		}
	}
	// RLIMIT_NPROC counts every process and thread of the worker's user: for
	// a worker running as the host's own user it would count the host and
	// every other worker too, and could stop the worker from starting a
	// thread long before it started anything itself. It is only set for
	// workers running as a user of their own.
	if g.l.Pids > 0 && uidOf(pid) != os.Getuid() {
		if err := prlimit(pid, rlimitNproc, uint64(g.l.Pids)); err != nil {
			return fmt.Errorf("set RLIMIT_NPROC: %w", err)
		}
	}
	return nil
}

func (g *rlimitGroup) Kill()         {}
func (g *rlimitGroup) OOMKills() int { return 0 }
func (g *rlimitGroup) Remove() error { return nil }

// PidsLimitHits is 0: RLIMIT_NPROC keeps no count.
func (g *rlimitGroup) PidsLimitHits() int { return 0 }

// uidOf returns the real uid of process pid, or the host's when unknown.
func uidOf(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return os.Getuid()
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[0] == "Uid:" {
			if uid, err := strconv.Atoi(f[1]); err == nil {
				return uid
			}
		}
	}
	return os.Getuid()
}

func prlimit(pid, resource int, limit uint64) error {
	lim := syscall.Rlimit{Cur: limit, Max: limit}
	_, _, errno := syscall.RawSyscall6(syscall.SYS_PRLIMIT64, uintptr(pid), uintptr(resource), uintptr(unsafe.Pointer(&lim)), 0, 0, 0)
	if errno != 0 {
		return errno
	}
	return nil
}
