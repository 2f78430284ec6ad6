package worker

import "syscall"

// sysProcAttr puts the worker in its own process group and asks the kernel to
// kill it if the host dies.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
