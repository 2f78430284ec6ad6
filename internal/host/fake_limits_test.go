package host_test

import (
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// fakeIDs describes the user the fake worker runs as: "uid gid groups".
func fakeIDs() string {
	groups, _ := os.Getgroups()
	return fmt.Sprintf("%d %d %v", os.Getuid(), os.Getgid(), groups)
}

// fakeHog allocates and touches memory far past any test's limit (but
// stops at 512 MiB should no limit stop it first).
func fakeHog() string {
	var hoard [][]byte
	for len(hoard) < 64 {
		b := make([]byte, 8<<20)
		for i := range b {
			b[i] = byte(i)
		}
		hoard = append(hoard, b)
	}
	return fmt.Sprintf("allocated %d MiB and lived", len(hoard)*8)
}

// fakeHogChild runs a process that allocates too much and reports how it
// ended.
func fakeHogChild() string {
	self, err := os.Executable()
	if err != nil {
		return err.Error()
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), "POLYFN_FAKE_WORKER=hog")
	err = cmd.Run()
	return fmt.Sprintf("child: %v", err)
}

// fakeThreads blocks 64 goroutines in system calls at once, which takes
// as many threads: a Go program that cannot make one dies.
func fakeThreads() string {
	var wg sync.WaitGroup
	for i := 0; i < 64; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ts := syscall.Timespec{Nsec: int64(200 * time.Millisecond)}
			_ = syscall.Nanosleep(&ts, nil)
		}()
	}
	wg.Wait()
	return "64 threads"
}

// fakeForkBomb starts processes until the system refuses (or 200 of them),
// one of them in a session of its own, out of the worker's process group,
// and reports how many it started. They all sleep: the instance's stop must
// kill them.
func fakeForkBomb() string {
	started := 0
	var err error
	for ; started < 200; started++ {
		cmd := exec.Command("sleep", "1000")
		if started == 0 {
			cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true} // escapes the process group
		}
		if err = cmd.Start(); err != nil {
			break
		}
		// Not waited for: a goroutine blocked in wait4 would hold a thread,
		// and threads count against the pids limit too.
	}
	return fmt.Sprintf("started %d: %v", started, err)
}
