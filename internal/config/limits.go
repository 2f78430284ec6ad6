package config

import (
	"fmt"
	"math"
	"os/user"
	"strconv"
)

// Limits bounds the resources of each worker process of a function (or app):
// the worker and everything it starts.
type Limits struct {
	// Memory is the most memory the worker may use; past it the kernel kills
	// it and its invocations fail with OutOfMemory. Zero: no limit.
	Memory Size `yaml:"memory"`
	// Pids is the most processes and threads the worker may have at once;
	// past it fork and thread creation fail. Zero: no limit.
	Pids int `yaml:"pids"`
	// CPU is the share of CPUs the worker may use (0.5: half a core; 2: two
	// cores). Zero: no limit.
	CPU float64 `yaml:"cpu"`
}

// IsZero reports whether no limit is set.
func (l Limits) IsZero() bool { return l == Limits{} }

// The least a worker needs to start: the convention of the runtimes polyfn
// is compatible with. Lower limits are refused when the config is loaded.
const (
	MinMemoryLimit = 50 << 20 // 50 MiB
	MinPidsLimit   = 20
	MinCPULimit    = 0.01
)

// The most the limits may be: past them the kernel refuses the cgroup
// setting (a pids.max above the kernel's PID_MAX_LIMIT, a CPU quota above
// its bandwidth limit), so the worker could not start, or the quota's
// arithmetic overflows.
const (
	MaxPidsLimit = 1 << 22 // PID_MAX_LIMIT on 64-bit Linux
	MaxCPULimit  = 1024
)

// validateIsolation checks limits and the user and group to run as, at the
// key path p of a function or app.
func validateIsolation(d *decoder, p string, l Limits, usr, grp string) {
	if l.Memory != 0 && l.Memory < MinMemoryLimit {
		d.errorf(d.at(p+".limits.memory"), p+".limits.memory", "%d bytes is below what a worker needs to start: at least 50Mi", l.Memory)
	}
	switch {
	case l.Pids < 0 || l.Pids != 0 && l.Pids < MinPidsLimit:
		d.errorf(d.at(p+".limits.pids"), p+".limits.pids", "%d is below what a worker needs to start: at least %d", l.Pids, MinPidsLimit)
	case l.Pids > MaxPidsLimit:
		d.errorf(d.at(p+".limits.pids"), p+".limits.pids", "%d is above what the kernel allows: at most %d", l.Pids, MaxPidsLimit)
	}
	switch {
	case math.IsNaN(l.CPU) || math.IsInf(l.CPU, 0):
		d.errorf(d.at(p+".limits.cpu"), p+".limits.cpu", "%g is not a number of CPUs: want such as 0.5 or 2", l.CPU)
	case l.CPU < 0 || l.CPU != 0 && l.CPU < MinCPULimit:
		d.errorf(d.at(p+".limits.cpu"), p+".limits.cpu", "%g is too small: at least %g (a hundredth of a core)", l.CPU, MinCPULimit)
	case l.CPU > MaxCPULimit:
		d.errorf(d.at(p+".limits.cpu"), p+".limits.cpu", "%g is too large: at most %d CPUs", l.CPU, MaxCPULimit)
	}
	for _, k := range []string{"limits.memory", "limits.pids", "limits.cpu"} {
		if d.explicitZero(p + "." + k) {
			d.errorf(d.at(p+"."+k), p+"."+k, "must be above zero (leave it out for no limit)")
		}
	}
	if usr != "" {
		if _, err := LookupUser(usr); err != nil {
			d.errorf(d.at(p+".user"), p+".user", "%v", err)
		}
	}
	if grp != "" {
		if _, err := LookupGroup(grp); err != nil {
			d.errorf(d.at(p+".group"), p+".group", "%v", err)
		}
	}
}

// LookupUser resolves a user name or numeric id to its uid and primary gid.
func LookupUser(name string) (*user.User, error) {
	if _, err := strconv.Atoi(name); err == nil {
		u, err := user.LookupId(name)
		if err != nil {
			// A numeric id need not exist in /etc/passwd.
			return &user.User{Uid: name, Gid: name, Username: name}, nil
		}
		return u, nil
	}
	u, err := user.Lookup(name)
	if err != nil {
		return nil, fmt.Errorf("unknown user %q", name)
	}
	return u, nil
}

// LookupGroup resolves a group name or numeric id to its gid.
func LookupGroup(name string) (string, error) {
	if _, err := strconv.Atoi(name); err == nil {
		return name, nil
	}
	g, err := user.LookupGroup(name)
	if err != nil {
		return "", fmt.Errorf("unknown group %q", name)
	}
	return g.Gid, nil
}
