//go:build !linux

package worker

import "syscall"

// sysProcAttr puts the worker in its own process group.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
