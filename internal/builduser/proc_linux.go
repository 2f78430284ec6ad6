package builduser

import "syscall"

// procAttr puts a build command in a process group of its own and has the
// kernel kill it if the host dies.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
