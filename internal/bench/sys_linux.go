package bench

import "syscall"

// childAttr makes a host started by the harness die with it.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
