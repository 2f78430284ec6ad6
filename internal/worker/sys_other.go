//go:build !linux

package worker

import (
	"fmt"
	"os"
	"syscall"
)

// sysProcAttr puts the worker in its own process group.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

// exitedChild reports whether the child process pid has exited; here it
// cannot tell before the process is reaped.
func exitedChild(int) bool { return false }

// CanRunAs reports, as an error, why the host cannot start workers with
// credential c: switching users needs root here.
func CanRunAs(c *syscall.Credential) error {
	if os.Geteuid() == 0 || int(c.Uid) == os.Getuid() && int(c.Gid) == os.Getgid() && c.NoSetGroups {
		return nil
	}
	return fmt.Errorf("the host (uid %d) cannot start workers as uid %d, gid %d: run it as root", os.Getuid(), c.Uid, c.Gid)
}
