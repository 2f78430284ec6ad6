package worker

import (
	"encoding/binary"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"unsafe"
)

// sysProcAttr puts the worker in its own process group and asks the kernel to
// kill it if the host dies.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// exitedChild reports whether the child process pid has exited: it is a
// zombie not reaped yet, or it was reaped already. It does not reap it.
func exitedChild(pid int) bool {
	const pPID = 1     // idtype_t P_PID
	var info [128]byte // siginfo_t
	for {
		_, _, errno := syscall.Syscall6(syscall.SYS_WAITID, pPID, uintptr(pid), uintptr(unsafe.Pointer(&info[0])),
			syscall.WEXITED|syscall.WNOHANG|syscall.WNOWAIT, 0, 0)
		switch errno {
		case 0:
			// si_signo is SIGCHLD when the child is waitable, 0 when it runs.
			return int32(binary.NativeEndian.Uint32(info[:4])) == int32(syscall.SIGCHLD)
		case syscall.EINTR:
			continue
		case syscall.ECHILD:
			return true // reaped already
		}
		return false
	}
}

// Capabilities needed to start workers as another user and give them their
// private directory.
const (
	capChown  = 0
	capSetgid = 6
	capSetuid = 7
)

// CanRunAs reports, as an error, why the host cannot start workers with
// credential c: switching to another user or group needs root, or
// CAP_SETUID, CAP_SETGID and CAP_CHOWN.
func CanRunAs(c *syscall.Credential) error {
	if int(c.Uid) == os.Getuid() && int(c.Gid) == os.Getgid() && c.NoSetGroups {
		return nil
	}
	eff, err := effectiveCaps()
	if err != nil {
		return err
	}
	var missing []string
	for _, cp := range []struct {
		bit  uint
		name string
	}{{capSetuid, "CAP_SETUID"}, {capSetgid, "CAP_SETGID"}, {capChown, "CAP_CHOWN"}} {
		if eff&(1<<cp.bit) == 0 {
			missing = append(missing, cp.name)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("the host (uid %d) cannot start workers as uid %d, gid %d: it lacks %s; run it as root or grant it CAP_SETUID, CAP_SETGID and CAP_CHOWN",
			os.Getuid(), c.Uid, c.Gid, strings.Join(missing, ", "))
	}
	return nil
}

// effectiveCaps reads the host's effective capability set.
func effectiveCaps() (uint64, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, err
	}
	return parseCapEff(string(b))
}

func parseCapEff(status string) (uint64, error) {
	for _, line := range strings.Split(status, "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			return strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		}
	}
	return 0, fmt.Errorf("no CapEff in /proc/self/status")
}
