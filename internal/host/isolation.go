package host

import (
	"fmt"
	"os"
	"strconv"
	"syscall"

	"github.com/polyfn/polyfn/internal/config"
	"github.com/polyfn/polyfn/internal/limits"
	"github.com/polyfn/polyfn/internal/worker"
)

// setupIsolation works out, for every function, how its workers are
// confined: the limits and user of the function, or of its app for
// functions that share workers. The limits backend is acquired (chosen and
// logged, the first time in the process) when some function has limits; a
// user the host cannot switch to is an error.
func (h *Host) setupIsolation() error {
	h.iso = map[string]worker.Isolation{}
	for i, fc := range h.cfg.Functions {
		owner, l, usr, grp := fmt.Sprintf("functions[%d] (%s)", i, fc.Name), fc.Limits, fc.User, fc.Group
		if fc.App != "" {
			a := h.cfg.Apps[fc.App]
			owner, l, usr, grp = "apps."+fc.App, a.Limits, a.User, a.Group
		}
		iso := worker.Isolation{Limits: l, OnOOMKill: h.oomKilled}
		if !l.IsZero() {
			if h.limiter == nil {
				h.limiter = limits.Acquire(h.log)
			}
			iso.Limiter = h.limiter
		}
		if usr != "" || grp != "" {
			cred, err := credential(usr, grp)
			if err == nil {
				err = worker.CanRunAs(cred)
			}
			if err != nil {
				h.releaseLimits()
				return fmt.Errorf("%s: %w", owner, err)
			}
			iso.Credential = cred
			// Workers of other users must reach their private directories.
			if err := os.Chmod(h.runDir, 0o711); err != nil {
				h.releaseLimits()
				return fmt.Errorf("run directory: %w", err)
			}
		}
		h.iso[fc.Name] = iso
	}
	return nil
}

// credential resolves the user and group workers run as; the group
// defaults to the user's primary group, the user to the host's.
func credential(usr, grp string) (*syscall.Credential, error) {
	c := &syscall.Credential{Uid: uint32(os.Getuid()), Gid: uint32(os.Getgid()), Groups: []uint32{}}
	if usr != "" {
		u, err := config.LookupUser(usr)
		if err != nil {
			return nil, err
		}
		uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
		gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("user %q has no numeric uid and gid", usr)
		}
		c.Uid, c.Gid = uint32(uid), uint32(gid)
	}
	if grp != "" {
		g, err := config.LookupGroup(grp)
		if err != nil {
			return nil, err
		}
		gid, err := strconv.ParseUint(g, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("group %q has no numeric gid", grp)
		}
		c.Gid = uint32(gid)
	}
	return c, nil
}

// oomKilled reports processes of a worker killed at its memory limit: a
// log record and polyfn_worker_oom_kills_total.
func (h *Host) oomKilled(ev worker.OOMEvent) {
	h.metrics.OOMKills(ev.Function, ev.Kills)
	msg := "a process of the worker was killed: out of memory"
	if ev.Worker {
		msg = "worker killed: out of memory"
	}
	h.log.Warn(msg, "function", ev.Function, "instance", ev.Instance, "pid", ev.Pid, "limit", limits.FormatSize(ev.Limit), "kills", ev.Kills)
}

// releaseLimits gives back the limits backend once every worker is gone.
func (h *Host) releaseLimits() {
	if h.limiter != nil {
		h.limiter.Release()
		h.limiter = nil
	}
}
