//go:build linux

package worker

import (
	"bufio"
	"os"
	"os/exec"
	"syscall"
	"testing"
)

// Processes that fork in a loop, each child forking the next and its
// parent exiting (so the process's id keeps moving ahead of a scan of
// /proc), are all dead when KillUser returns without an error.
func TestKillUserForkHoppers(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	uid := testUID(12)
	u := newTestUsers(t, uid, uid, t.TempDir())
	id, err := u.Take()
	if err != nil {
		t.Fatal(err)
	}
	defer u.Release(id)
	// A system Python the user id can run (not one under root's home).
	const python = "/usr/bin/python3"
	if _, err := os.Stat(python); err != nil {
		t.Skip("no " + python)
	}
	// ulimit -u bounds the processes the user id may have. Each hopper
	// forks its successor and exits, as fast as it can.
	script := `ulimit -u 48; exec ` + python + ` -I -c '
import os, sys
for _ in range(6):
    if os.fork() == 0:
        while True:
            try:
                if os.fork():
                    os._exit(0)
            except OSError:
                pass
print("started", flush=True)
os._exit(0)
'`
	cmd := exec.Command("/bin/sh", "-c", script)
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Credential: &syscall.Credential{Uid: id, Gid: id, Groups: []uint32{}}}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go cmd.Wait()
	if _, err := bufio.NewReader(stdout).ReadString('\n'); err != nil {
		t.Fatalf("the hoppers did not start: %v", err)
	}
	if err := KillUser(id); err != nil {
		t.Fatal(err)
	}
	// One scan of /proc can miss a process whose id moves ahead of it;
	// many in a row do not all miss one that still runs. (Zombies, which
	// init reaps in its own time, are not counted.)
	for pass := 0; pass < 200; pass++ {
		if n := killUserOnce(id, false); n != 0 {
			_ = KillUser(id)
			t.Fatalf("%d processes of uid %d outlived KillUser", n, id)
		}
	}
}
