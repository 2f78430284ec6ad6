// Package builduser runs the processes of a function's build (pip, uv,
// npm, the go command) as a user of their own when the host runs as root,
// the way workers run (internal/worker: leased user ids from
// isolation.uids). A package's install script (an npm lifecycle script, a
// Python sdist's setup.py) then runs without the host's privileges: it
// can write only into its session's work directory, never into the build
// cache, the state directory or anything else of the host's.
//
// A session leases a user id for the length of one build. Its processes
// run in a work directory of their own (HOME, TMPDIR and the installers'
// caches inside it) and write their result into its out directory; the
// host then kills whatever still runs under the id, takes the result
// (owned by root, writable by nobody else, readable by the users workers
// run as) into the cache and removes the work directory before the id is
// released. The work directory itself stays root's, so the build user
// cannot replace its out directory with a link to something of the
// host's; Take never follows a symbolic link the build left. On a host that is not root, or with isolation.user: host, a
// session runs everything as the host's user, in place, as before.
package builduser

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/polyfn/polyfn/internal/config"
	"github.com/polyfn/polyfn/internal/worker"
)

// WaitDelay bounds how long a build command's output is waited for once
// the command has exited or been killed: a process it left behind that
// holds its output open (a daemon an install script started) does not hang
// the build. docs/functions.md documents it.
const WaitDelay = 10 * time.Second

// Runner says which user builds run as. A nil Runner runs them as the
// host's user.
type Runner struct {
	users *worker.Users
	// base is where sessions' work directories are made.
	base string
}

// For returns how cfg's builds run, following how its workers do
// (isolation.user): a host running as root builds as user ids of their
// own from isolation.uids, unless isolation.user is host (then workers run
// as root too, and so do builds); any other host builds as itself (nil).
func For(cfg *config.Config) *Runner {
	if os.Geteuid() != 0 || cfg.Isolation.User == config.UserHost {
		return nil
	}
	lo, hi := cfg.Isolation.UIDRange()
	if lo == 0 {
		return nil
	}
	return &Runner{users: worker.SharedUsers(lo, hi), base: os.TempDir()}
}

// NewRunner returns a runner leasing ids from users, making work
// directories under base (the temporary directory when empty). Tests use it.
func NewRunner(users *worker.Users, base string) *Runner {
	if base == "" {
		base = os.TempDir()
	}
	return &Runner{users: users, base: base}
}

// Session is one build's user and work directory. The zero Session (and a
// nil one) runs everything as the host's user.
type Session struct {
	uid  uint32
	work string
	// dev and ino identify the work directory as Begin made it.
	dev, ino uint64
	// shared are directories given to the build user for the session
	// (Share) and taken back at Close.
	shared []string
	once   sync.Once
	users  *worker.Users
}

// Begin starts a session: leases a user id and makes its work directory
// (HOME, TMPDIR, caches, out). With a nil runner it returns a session that
// runs as the host's user. The caller must Close it.
func (r *Runner) Begin() (*Session, error) {
	if r == nil {
		return &Session{}, nil
	}
	uid, err := r.users.Take()
	if err != nil {
		return nil, fmt.Errorf("build user: %w", err)
	}
	s := &Session{uid: uid, users: r.users}
	work, err := os.MkdirTemp(r.base, "polyfn-build-")
	if err != nil {
		r.users.Release(uid)
		return nil, fmt.Errorf("build work directory: %w", err)
	}
	s.work = work
	// The work directory is root's, searchable by others (0711): the
	// build user cannot rename or replace its entries. home, tmp and cache
	// are the build user's and no one else's (0700); out stays root's until
	// the host has written what the build starts from into it and gives it
	// to the build user (Own).
	var st syscall.Stat_t
	err = syscall.Lstat(work, &st)
	if err == nil {
		s.dev, s.ino = uint64(st.Dev), uint64(st.Ino)
		err = os.Chmod(work, 0o711)
	}
	for _, d := range []string{"home", "tmp", "cache", "out"} {
		if err == nil {
			err = os.Mkdir(filepath.Join(work, d), 0o700)
		}
		if err == nil && d != "out" {
			err = os.Lchown(filepath.Join(work, d), int(uid), int(uid))
		}
	}
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("build work directory: %w", err)
	}
	if err := Reachable(work, uid, uid, 1); err != nil {
		s.Close()
		return nil, fmt.Errorf("builds run as uid %d (a user of their own, isolation.uids), which cannot reach its work directory in %s: %w; set TMPDIR to a directory other users may enter (such as /tmp), or set isolation.user: host", uid, r.base, err)
	}
	return s, nil
}

// Sandboxed reports whether the session runs as a user of its own.
func (s *Session) Sandboxed() bool { return s != nil && s.work != "" }

// Uid is the user id the session's processes run as (the host's when not
// sandboxed).
func (s *Session) Uid() uint32 {
	if !s.Sandboxed() {
		return uint32(os.Getuid())
	}
	return s.uid
}

// Work returns the session's work directory ("" when not sandboxed).
func (s *Session) Work() string {
	if !s.Sandboxed() {
		return ""
	}
	return s.work
}

// Out returns the directory the build writes its result into: fallback
// (a directory of the host's, written in place) when not sandboxed, else
// the session's out directory: root's until Own gives it to the build
// user (the host writes what the build starts from into it first). Take
// moves what is there to where fallback is.
func (s *Session) Out(fallback string) string {
	if !s.Sandboxed() {
		return fallback
	}
	return filepath.Join(s.work, "out")
}

// Env returns what the session sets in its commands' environment: HOME,
// TMPDIR and the installers' caches inside the work directory. Empty when
// not sandboxed.
func (s *Session) Env() []string {
	if !s.Sandboxed() {
		return nil
	}
	home, tmp, cache := filepath.Join(s.work, "home"), filepath.Join(s.work, "tmp"), filepath.Join(s.work, "cache")
	return []string{
		"HOME=" + home,
		"USER=polyfn-build", "LOGNAME=polyfn-build",
		"TMPDIR=" + tmp,
		"XDG_CACHE_HOME=" + cache,
		"XDG_CONFIG_HOME=" + filepath.Join(home, ".config"),
		"PIP_CACHE_DIR=" + filepath.Join(cache, "pip"),
		"UV_CACHE_DIR=" + filepath.Join(cache, "uv"),
		"npm_config_cache=" + filepath.Join(cache, "npm"),
		"GOPATH=" + filepath.Join(home, "go"),
		"GOCACHE=" + filepath.Join(cache, "go-build"),
		"GOMODCACHE=" + filepath.Join(home, "go", "pkg", "mod"),
	}
}

// passed are the host's environment variables a sandboxed build's
// commands get (with those of passedPrefixes): what the installers and
// compilers are configured with (indexes, proxies, certificates, compiler
// flags). No other variable of the host's — credentials, tokens — reaches
// a package's install script. docs/security.md lists them.
var passed = map[string]bool{
	"PATH": true, "LANG": true, "LANGUAGE": true, "LC_ALL": true, "LC_CTYPE": true, "TZ": true, "TERM": true,
	"HTTP_PROXY": true, "HTTPS_PROXY": true, "NO_PROXY": true, "ALL_PROXY": true,
	"http_proxy": true, "https_proxy": true, "no_proxy": true, "all_proxy": true,
	"SSL_CERT_FILE": true, "SSL_CERT_DIR": true, "REQUESTS_CA_BUNDLE": true, "CURL_CA_BUNDLE": true,
	"CC": true, "CXX": true, "CFLAGS": true, "CXXFLAGS": true, "CPPFLAGS": true, "LDFLAGS": true, "PKG_CONFIG_PATH": true,
}

var passedPrefixes = []string{"GO", "CGO_", "PIP_", "UV_", "npm_config_", "NPM_CONFIG_", "NODE_"}

// Environ returns the entries of env a sandboxed build's commands get.
func Environ(env []string) []string {
	var out []string
	for _, e := range env {
		k, _, _ := strings.Cut(e, "=")
		ok := passed[k]
		for _, p := range passedPrefixes {
			ok = ok || strings.HasPrefix(k, p)
		}
		if ok {
			out = append(out, e)
		}
	}
	return out
}

// Command returns a command running name with args in dir: in a process
// group of its own, killed as a group when ctx is done, and (sandboxed)
// as the session's user with the host's environment as Environ passes it
// and the session's (Env). extraEnv is added last.
func (s *Session) Command(ctx context.Context, dir string, extraEnv []string, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.SysProcAttr = procAttr()
	cmd.Cancel = func() error {
		if cmd.Process == nil {
			return nil
		}
		// The whole group: an installer's children (a compiler, a
		// lifecycle script) die with it.
		err := syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		if errors.Is(err, syscall.ESRCH) {
			return os.ErrProcessDone
		}
		return err
	}
	cmd.WaitDelay = WaitDelay
	switch {
	case s.Sandboxed():
		cmd.Env = append(append(Environ(os.Environ()), s.Env()...), extraEnv...)
	case len(extraEnv) > 0:
		cmd.Env = append(os.Environ(), extraEnv...)
	}
	if s.Sandboxed() {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: s.uid, Gid: s.uid, Groups: []uint32{}}
	}
	return cmd
}

// Own gives paths (and everything under them) to the build user: files the
// host prepared for the build to use or change. It does nothing when not
// sandboxed.
func (s *Session) Own(paths ...string) error {
	if !s.Sandboxed() {
		return nil
	}
	for _, p := range paths {
		if err := chownTree(p, s.uid); err != nil {
			return fmt.Errorf("give %s to the build user (uid %d): %w", p, s.uid, err)
		}
	}
	return nil
}

// Share gives the directories dirs (made if missing) to the build user
// for the session; Close gives them back to root. The go command's caches
// use it: only the go command runs while they are the build user's, and
// no process of the id outlives the session. The caller must hold a lock
// that keeps other sessions from sharing the same directories meanwhile.
//
// A directory a session shared and did not give back (its host died
// mid-build, or a process of its user survived) may hold anything that
// user wrote: Share wipes it before sharing it again. It knows one by a
// mark, a root-owned file beside it (sharedMark) that Share writes before
// giving the directory away and Close removes once it is root's again, or
// by the directory not being root's.
func (s *Session) Share(dirs ...string) error {
	if !s.Sandboxed() {
		return nil
	}
	for _, d := range dirs {
		if err := Reclaim(d); err != nil {
			return fmt.Errorf("reclaim %s: %w", d, err)
		}
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(sharedMark(d), []byte(fmt.Sprintf("%d\n", s.uid)), 0o600); err != nil {
			return err
		}
		s.shared = append(s.shared, d)
		if err := chownTree(d, s.uid); err != nil {
			return fmt.Errorf("give %s to the build user (uid %d): %w", d, s.uid, err)
		}
	}
	return nil
}

// sharedMark is the file beside the shared directory d that says it may
// be a build user's (Share).
func sharedMark(d string) string {
	return filepath.Join(filepath.Dir(d), "."+filepath.Base(d)+".shared")
}

// Reclaim wipes the directory d when a session shared it and did not give
// it back: its mark (sharedMark) is there, or d is not a directory owned by
// root. Share calls it; the caller holds the lock that guards d.
func Reclaim(d string) error {
	_, err := os.Lstat(sharedMark(d))
	stale := err == nil
	var st syscall.Stat_t
	if err := syscall.Lstat(d, &st); err == nil {
		stale = stale || st.Mode&syscall.S_IFMT != syscall.S_IFDIR || st.Uid != 0
	} else if !errors.Is(err, syscall.ENOENT) {
		return err
	}
	if !stale {
		return nil
	}
	if err := os.RemoveAll(d); err != nil {
		return err
	}
	if err := os.Remove(sharedMark(d)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// Readable checks that the build user can read the directory dir (its
// parents searchable, itself readable and searchable), and says what to
// change when it cannot.
func (s *Session) Readable(what, dir string) error {
	if !s.Sandboxed() {
		return nil
	}
	if err := Reachable(dir, s.uid, s.uid, 5); err != nil {
		return fmt.Errorf("builds run as uid %d (a user of their own, isolation.uids) and cannot read %s: %w; make it readable by other users (chmod -R o+rX), or set isolation.user: host to build and run as the host's user", s.uid, what, err)
	}
	return nil
}

// Take moves the result the build wrote into out (from Out) to dst, a
// directory of the host's that exists: each entry of out becomes dst's,
// or with names only those entries (each must exist; the rest are
// dropped). Sandboxed, it first kills every process of the build user
// (failing if any survives), checks that the work directory is the one
// Begin made and that out is a directory, not a symbolic link, gives out
// back to root, then makes the result root's: owned by root, writable by
// root alone, readable (and directories searchable) by everyone, no set-id
// bits. Symbolic links in the result stay links; none is followed. An
// entry the build user does not own (a hard link to someone else's file)
// fails it. Not sandboxed, out is dst and nothing happens.
func (s *Session) Take(out, dst string, names ...string) error {
	if !s.Sandboxed() {
		return nil
	}
	if err := worker.KillUser(s.uid); err != nil {
		return fmt.Errorf("take the build's result: %w", err)
	}
	if err := s.checkWork(out); err != nil {
		return fmt.Errorf("take the build's result: %w", err)
	}
	// Nothing of the build user's runs now, and out is root's from here
	// on: what is read below cannot change under it.
	if err := os.Lchown(out, 0, 0); err != nil {
		return err
	}
	if err := os.Chmod(out, 0o700); err != nil {
		return err
	}
	if len(names) > 0 {
		if err := s.keepOnly(out, names); err != nil {
			return fmt.Errorf("take the build's result: %w", err)
		}
	}
	if err := s.secure(out); err != nil {
		return err
	}
	ents, err := os.ReadDir(out)
	if err != nil {
		return err
	}
	for _, e := range ents {
		from, to := filepath.Join(out, e.Name()), filepath.Join(dst, e.Name())
		if err := os.Rename(from, to); err != nil {
			if !errors.Is(err, syscall.EXDEV) {
				return fmt.Errorf("take the build's result: %w", err)
			}
			if err := copyTree(from, to); err != nil {
				return fmt.Errorf("take the build's result: %w", err)
			}
		}
	}
	return nil
}

// checkWork checks, once no process of the build user runs, that the work
// directory is a directory (not a link) with the identity Begin recorded,
// still root's, and that out is its out directory: a directory, not a link.
func (s *Session) checkWork(out string) error {
	var st syscall.Stat_t
	if err := syscall.Lstat(s.work, &st); err != nil {
		return err
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFDIR || uint64(st.Dev) != s.dev || uint64(st.Ino) != s.ino || st.Uid != 0 {
		return fmt.Errorf("the work directory %s was replaced", s.work)
	}
	if out != filepath.Join(s.work, "out") {
		return fmt.Errorf("%s is not the session's out directory", out)
	}
	if err := syscall.Lstat(out, &st); err != nil {
		return err
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFDIR {
		return fmt.Errorf("the build replaced its out directory %s with something other than a directory (mode %o)", out, st.Mode)
	}
	return nil
}

// keepOnly removes the entries of dir not in names; each of names must be
// there.
func (s *Session) keepOnly(dir string, names []string) error {
	keep := map[string]bool{}
	for _, n := range names {
		if _, err := os.Lstat(filepath.Join(dir, n)); err != nil {
			return err
		}
		keep[n] = true
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if !keep[e.Name()] {
			if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	}
	return nil
}

// secure makes the tree at root the host's, refusing what the build user
// does not own. It never follows a symbolic link: the walk lstats every
// entry and a link is given to root as a link.
func (s *Session) secure(root string) error {
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st syscall.Stat_t
		if err := syscall.Lstat(p, &st); err != nil {
			return err
		}
		if p == root && st.Mode&syscall.S_IFMT != syscall.S_IFDIR {
			return fmt.Errorf("%s is not a directory", p)
		}
		if p != root && st.Uid != s.uid {
			return fmt.Errorf("the build left %s, owned by uid %d, not by the build user (uid %d)", p, st.Uid, s.uid)
		}
		if err := os.Lchown(p, 0, 0); err != nil {
			return err
		}
		mode := fs.FileMode(st.Mode)
		switch st.Mode & syscall.S_IFMT {
		case syscall.S_IFLNK:
			return nil
		case syscall.S_IFDIR:
			return os.Chmod(p, 0o755)
		case syscall.S_IFREG:
			perm := fs.FileMode(0o644)
			if mode&0o111 != 0 {
				perm = 0o755
			}
			return os.Chmod(p, perm)
		default:
			return os.Remove(p) // a fifo or socket: nothing a function reads
		}
	})
}

// Close ends the session: kills every process of the build user, gives
// shared directories back to root, removes the work directory and releases
// the user id. It is safe to call more than once.
func (s *Session) Close() {
	if !s.Sandboxed() {
		return
	}
	s.once.Do(func() {
		if worker.KillUser(s.uid) != nil {
			// Something of the build user's survived: the shared
			// directories keep their marks (the next Share wipes them)
			// and the id stays leased (Release).
			s.users.Release(s.uid)
			return
		}
		for _, d := range s.shared {
			if chownTree(d, 0) == nil {
				_ = os.Remove(sharedMark(d))
			}
		}
		_ = os.RemoveAll(s.work)
		s.users.Release(s.uid)
	})
}

// chownTree gives the tree at root (not following links) to uid, gid uid.
func chownTree(root string, uid uint32) error {
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, int(uid), int(uid))
	})
}

// copyTree copies the tree at from to to (which must not exist): regular
// files, directories and symbolic links, with their permission bits.
func copyTree(from, to string) error {
	return filepath.WalkDir(from, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, p)
		target := filepath.Join(to, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			l, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(l, target)
		case d.IsDir():
			return os.Mkdir(target, info.Mode().Perm())
		case d.Type().IsRegular():
			src, err := os.Open(p)
			if err != nil {
				return err
			}
			defer src.Close()
			dst, err := os.OpenFile(target, os.O_WRONLY|os.O_CREATE|os.O_EXCL, info.Mode().Perm())
			if err != nil {
				return err
			}
			if _, err := io.Copy(dst, src); err != nil {
				dst.Close()
				return err
			}
			return dst.Close()
		}
		return nil
	})
}

// Reachable checks that the user uid (group gid, no other groups) may
// search every directory above path and has the access bits want (4 read,
// 1 execute or search) on path itself.
func Reachable(path string, uid, gid uint32, want uint32) error {
	abs, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	check := func(p string, bits uint32) error {
		var st syscall.Stat_t
		if err := syscall.Stat(p, &st); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		m := uint32(st.Mode)
		mode := m & 0o7
		switch {
		case st.Uid == uid:
			mode = (m >> 6) & 0o7
		case st.Gid == gid:
			mode = (m >> 3) & 0o7
		}
		if mode&bits != bits {
			return fmt.Errorf("%s is mode %04o, owner %d, group %d", p, m&0o7777, st.Uid, st.Gid)
		}
		return nil
	}
	var parents []string
	for dir := filepath.Dir(abs); ; dir = filepath.Dir(dir) {
		parents = append(parents, dir)
		if filepath.Dir(dir) == dir {
			break
		}
	}
	for i := len(parents) - 1; i >= 0; i-- {
		if err := check(parents[i], 1); err != nil {
			return err
		}
	}
	return check(abs, want)
}
