//go:build !linux

package builduser

import "syscall"

// procAttr puts a build command in a process group of its own.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
