package host

import (
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/polyfn/polyfn/internal/builduser"
	"github.com/polyfn/polyfn/internal/config"
	"github.com/polyfn/polyfn/internal/limits"
	"github.com/polyfn/polyfn/internal/worker"
)

// setupIsolation works out, for every function, how its workers are
// confined: the limits and user of the function, or of its app for
// functions that share workers, else the host-wide isolation.user. The
// limits backend is acquired (chosen and logged, the first time in the
// process) when some function has limits; a user the host cannot switch to
// is an error.
func (h *Host) setupIsolation() error { return h.isolate(false) }

// CheckIsolation reports, without starting anything, what would stop a
// host for cfg from starting its workers: a user it cannot switch to, code
// or a runtime out of the reach of the users workers run as.
func CheckIsolation(cfg *config.Config) error {
	h := &Host{cfg: cfg, log: slog.New(slog.DiscardHandler)}
	return h.isolate(true)
}

// isolate is setupIsolation; check only checks, acquiring and changing
// nothing.
func (h *Host) isolate(check bool) error {
	h.iso = map[string]worker.Isolation{}
	def, err := h.defaultIsolation()
	if err != nil {
		return err
	}
	h.standbyIso = def
	for i, fc := range h.cfg.Functions {
		owner, l, usr, grp := fmt.Sprintf("functions[%d] (%s)", i, fc.Name), fc.Limits, fc.User, fc.Group
		if fc.App != "" {
			a := h.cfg.Apps[fc.App]
			owner, l, usr, grp = "apps."+fc.App, a.Limits, a.User, a.Group
		}
		iso := def
		iso.Limits, iso.OnOOMKill = l, h.oomKilled
		if !l.IsZero() && !check {
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
			iso.Credential, iso.Users = cred, nil
		}
		if err := h.checkReachable(owner, fc, iso); err != nil {
			h.releaseLimits()
			return err
		}
		if (iso.Credential != nil || iso.Users != nil) && !check {
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

// defaultIsolation is how workers run when neither their function nor
// their app names a user: isolation.user.
func (h *Host) defaultIsolation() (worker.Isolation, error) {
	switch u := h.cfg.Isolation.User; u {
	case config.UserHost:
		return worker.Isolation{}, nil
	case config.UserAuto, "":
		if os.Geteuid() != 0 {
			return worker.Isolation{}, nil
		}
		lo, hi := h.cfg.Isolation.UIDRange()
		return worker.Isolation{Users: worker.SharedUsers(lo, hi)}, nil
	default:
		cred, err := credential(u, "")
		if err == nil {
			err = worker.CanRunAs(cred)
		}
		if err != nil {
			return worker.Isolation{}, fmt.Errorf("isolation.user: %w", err)
		}
		return worker.Isolation{Credential: cred}, nil
	}
}

// describeIsolation says, once per configuration, which users workers run as.
func (h *Host) describeIsolation() {
	var dynamic, host, other []string
	for _, fc := range h.cfg.Functions {
		iso := h.iso[fc.Name]
		switch {
		case iso.Users != nil:
			dynamic = append(dynamic, fc.Name)
		case iso.OtherUser():
			other = append(other, fmt.Sprintf("%s (uid %d)", fc.Name, iso.Credential.Uid))
		default:
			host = append(host, fc.Name)
		}
	}
	attrs := []any{"host_uid", os.Getuid()}
	if len(dynamic) > 0 {
		lo, hi := h.cfg.Isolation.UIDRange()
		attrs = append(attrs, "own_user", strings.Join(dynamic, ","), "uids", fmt.Sprintf("%d-%d", lo, hi))
	}
	if len(other) > 0 {
		attrs = append(attrs, "named_user", strings.Join(other, ","))
	}
	if len(host) > 0 {
		attrs = append(attrs, "host_user", strings.Join(host, ","))
	}
	msg := "workers run as users of their own"
	if len(dynamic) == 0 && len(other) == 0 {
		msg = "workers run as the host's user"
	}
	h.log.Info(msg, attrs...)
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

// checkReachable fails when the user fc's workers run as cannot reach what
// they need: the runtime's program (through every link to it) and the
// function's code. A runtime installed under a private home directory
// (/root/.pyenv) is the usual cause; the error says what to change.
func (h *Host) checkReachable(owner string, fc config.Function, iso worker.Isolation) error {
	var uid, gid uint32
	who := ""
	switch {
	case iso.Users != nil:
		lo, hi := iso.Users.Range()
		uid, gid, who = lo, lo, fmt.Sprintf("users %d-%d of their own (isolation.user %s)", lo, hi, h.cfg.Isolation.User)
		if lo == 0 {
			return nil
		}
	case iso.OtherUser():
		uid, gid, who = iso.Credential.Uid, iso.Credential.Gid, fmt.Sprintf("uid %d", iso.Credential.Uid)
	default:
		return nil
	}
	fix := "set user: root on the function (or isolation.user: host) to run it as the host's user"
	if err := builduser.Reachable(fc.Codedir, uid, gid, 5); err != nil {
		return fmt.Errorf("%s: its workers run as %s and cannot read codedir: %w; make it readable by other users (chmod -R o+rX), or %s", owner, who, err, fix)
	}
	rt := h.cfg.Effective(fc)
	if len(rt.Command) == 0 || strings.Contains(rt.Command[0], "{") {
		return nil // built by the host (Go): the binary is put in reach
	}
	path, err := exec.LookPath(rt.Command[0])
	if err != nil {
		return nil // reported when the worker starts, as for any user
	}
	paths := []string{path}
	if real, err := filepath.EvalSymlinks(path); err == nil && real != path {
		paths = append(paths, real)
	}
	for _, p := range paths {
		if err := builduser.Reachable(p, uid, gid, 1); err != nil {
			return fmt.Errorf("%s: its workers run as %s and cannot run runtime %s's program %s: %w; install the runtime where other users can read it (for Python, a virtualenv made from a system interpreter such as /usr/bin/python3), make the directory traversable (chmod o+x), or %s",
				owner, who, rt.Name, paths[len(paths)-1], err, fix)
		}
	}
	return nil
}
