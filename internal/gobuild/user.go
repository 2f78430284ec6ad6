package gobuild

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/polyfn/polyfn/internal/builduser"
)

// One Build's go commands run in a session of internal/builduser: as a
// user of their own when the builder has a Runner. The session begins with
// the first go command that runs (an unchanged function runs none) and
// ends with the Build. Sandboxed, the go command's build and module caches
// are SharedCache/{build,mod}, one pair for every host of the machine: the
// build user's while its session lasts, root's again after it, and used by
// one session at a time (a lock file, SharedCache/lock). Only the go
// command runs under the id meanwhile, no code of a function's. When the
// shared caches cannot be made, the session uses caches of its own (a
// build then compiles and downloads everything). The module file the
// builder adds (sdkArgs) is copied into the work directory, since -mod=mod
// may rewrite it.

// SharedCache is where sandboxed Go builds keep the go command's caches.
const SharedCache = "/var/cache/polyfn/go"

// lockPoll is how often a build waiting for the shared caches tries their
// lock file again.
const lockPoll = 50 * time.Millisecond

// cacheMu lets one build of the process hold the shared caches at a time.
var cacheMu = make(chan struct{}, 1)

// lockShared waits (until ctx is done) for the shared caches: the
// process's turn, then the machine's (the lock file). The returned file's
// closing and a receive from cacheMu end the turn.
func lockShared(ctx context.Context) (*os.File, error) {
	select {
	case cacheMu <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if err := os.MkdirAll(SharedCache, 0o755); err != nil {
		<-cacheMu
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(SharedCache, "lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		<-cacheMu
		return nil, err
	}
	t := time.NewTicker(lockPoll)
	defer t.Stop()
	for {
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err == nil {
			return f, nil
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			f.Close()
			<-cacheMu
			return nil, ctx.Err()
		}
	}
}

// run is one Build's session, begun lazily.
type run struct {
	b   *Builder
	s   *builduser.Session
	err error
	// env is what the session's go commands get on top of its own.
	env []string
	// modfile is the session's copy of the builder's module file.
	modfile string
	// lock holds the shared caches while the session uses them.
	lock *os.File
}

func (r *run) session(ctx context.Context) (*builduser.Session, error) {
	if r.s != nil || r.err != nil {
		return r.s, r.err
	}
	r.s, r.err = r.b.Runner.Begin()
	if r.err != nil || !r.s.Sandboxed() {
		return r.s, r.err
	}
	lock, err := lockShared(ctx)
	if ctx.Err() != nil {
		r.err = err
		return r.s, r.err
	}
	if err == nil && builduser.Reachable(SharedCache, r.s.Uid(), r.s.Uid(), 1) == nil {
		r.lock = lock
		build, mod := filepath.Join(SharedCache, "build"), filepath.Join(SharedCache, "mod")
		if r.err = r.s.Share(build, mod); r.err != nil {
			return r.s, r.err
		}
		r.env = []string{"GOCACHE=" + build, "GOMODCACHE=" + mod}
	} else if err == nil {
		lock.Close()
		<-cacheMu
	}
	return r.s, nil
}

// modcache is the module cache the session's go commands use ("" when
// there is no session).
func (r *run) modcache() string {
	if r.s == nil || !r.s.Sandboxed() {
		return ""
	}
	v := ""
	for _, e := range append(r.s.Env(), r.env...) {
		if val, ok := strings.CutPrefix(e, "GOMODCACHE="); ok {
			v = val
		}
	}
	return v
}

// close ends the session, if any. It is safe to call more than once.
func (r *run) close() {
	if r.s != nil {
		r.s.Close() // gives the shared caches back to root first
	}
	r.s, r.err, r.env, r.modfile = nil, nil, nil, ""
	if r.lock != nil {
		r.lock.Close()
		r.lock = nil
		<-cacheMu
	}
}

// command returns the go command with args, run in dir, under the
// builder's module file (sdkArgs) when there is one, in r's session.
func (b *Builder) command(ctx context.Context, r *run, dir string, modArgs []string, args ...string) (*exec.Cmd, error) {
	s, err := r.session(ctx)
	if err != nil {
		return nil, err
	}
	if err := s.Readable("the Go function's code "+dir, dir); err != nil {
		return nil, err
	}
	if len(modArgs) > 0 && s.Sandboxed() {
		if modArgs, err = r.ownModfile(modArgs); err != nil {
			return nil, err
		}
	}
	if len(modArgs) > 0 {
		args = append(append([]string{args[0]}, modArgs...), args[1:]...)
	}
	env := r.env
	if len(modArgs) > 0 {
		// -modfile is refused in workspace mode.
		env = append(env[:len(env):len(env)], "GOWORK=off")
	}
	return s.Command(ctx, dir, env, b.goTool(), args...), nil
}

// ownModfile copies the module file of modArgs (and its go.sum) into the
// session's work directory, for the build user, once per session, and
// returns modArgs naming the copy.
func (r *run) ownModfile(modArgs []string) ([]string, error) {
	out := make([]string, len(modArgs))
	copy(out, modArgs)
	for i, a := range out {
		src, ok := strings.CutPrefix(a, "-modfile=")
		if !ok {
			continue
		}
		if r.modfile == "" {
			dir := filepath.Join(r.s.Work(), "modfile")
			if err := os.Mkdir(dir, 0o700); err != nil {
				return nil, err
			}
			for _, f := range []string{"go.mod", "go.sum"} {
				data, err := os.ReadFile(filepath.Join(filepath.Dir(src), f))
				if err != nil && !os.IsNotExist(err) {
					return nil, err
				}
				if err == nil {
					if err := os.WriteFile(filepath.Join(dir, f), data, 0o600); err != nil {
						return nil, err
					}
				}
			}
			if err := r.s.Own(dir); err != nil {
				return nil, err
			}
			r.modfile = filepath.Join(dir, "go.mod")
		}
		out[i] = "-modfile=" + r.modfile
	}
	if r.modfile == "" {
		return nil, fmt.Errorf("no -modfile in %q", modArgs)
	}
	return out, nil
}
