package bench

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clockTick is the unit of utime and stime in /proc/PID/stat (USER_HZ,
// 100 on every Linux architecture Go supports).
const clockTick = 10 * time.Millisecond

// selfCPU is this process's user and system CPU time.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// statCPU returns the process group and the user and system CPU time of
// pid, from /proc/PID/stat (every thread of the process).
func statCPU(pid int) (pgrp int, cpu time.Duration, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: no command", pid)
	}
	// From state, the 3rd field of the line: pgrp is the 5th, utime and
	// stime the 14th and 15th.
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	pgrp, err = strconv.Atoi(f[2])
	if err != nil {
		return 0, 0, err
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("/proc/%d/stat: bad utime or stime", pid)
	}
	return pgrp, time.Duration(ut+st) * clockTick, nil
}

// procCPU is the CPU time of one process (0 once it is gone).
func procCPU(pid int) time.Duration {
	_, cpu, _ := statCPU(pid)
	return cpu
}

// groupsCPU sums the CPU time of the live processes of each process group
// in pgids (a worker runs in a group of its own, with whatever it started).
func groupsCPU(pgids []int) map[int]time.Duration {
	want := make(map[int]bool, len(pgids))
	for _, g := range pgids {
		want[g] = true
	}
	out := make(map[int]time.Duration, len(pgids))
	for _, pid := range pids() {
		if g, cpu, err := statCPU(pid); err == nil && want[g] {
			out[g] += cpu
		}
	}
	return out
}
