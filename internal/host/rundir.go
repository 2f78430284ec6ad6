package host

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// A host's run directory is $TMPDIR/polyfn-* and holds the instances'
// private directories. Close removes it; a host killed with SIGKILL cannot,
// so every host, as it starts, removes the run directories of hosts that
// are gone. What proves a directory is a gone host's: it holds
// runDirLock, on which its host kept an exclusive flock(2) for its whole
// life (the kernel releases it when the process dies, however it dies),
// and the lock can be taken now. A directory without the file, of another
// user, or whose lock is held, is left alone.
const (
	runDirPrefix = "polyfn-"
	// runDirLock is the lock file in a run directory; it holds the host's
	// pid, for people.
	runDirLock = "host.lock"
)

// runDir is a host's run directory and the lock that marks it in use.
type runDir struct {
	path string
	lock *os.File
}

// newRunDir removes the run directories of hosts that are gone, then makes
// this host's, locked for as long as the host lives.
func newRunDir(log *slog.Logger) (*runDir, error) {
	removeStaleRunDirs(os.TempDir(), log)
	path, err := os.MkdirTemp("", runDirPrefix)
	if err != nil {
		return nil, err
	}
	// The lock is taken under another name and then renamed, so that no
	// other host ever sees the lock file unlocked.
	tmp := filepath.Join(path, runDirLock+".new")
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o600)
	if err == nil {
		if err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err == nil {
			if _, err = fmt.Fprintf(f, "%d\n", os.Getpid()); err == nil {
				err = os.Rename(tmp, filepath.Join(path, runDirLock))
			}
		}
		if err != nil {
			f.Close()
		}
	}
	if err != nil {
		os.RemoveAll(path)
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return &runDir{path: path, lock: f}, nil
}

// remove deletes the directory, then releases its lock.
func (d *runDir) remove() {
	os.RemoveAll(d.path)
	d.lock.Close()
}

// removeStaleRunDirs removes the run directories under tmp whose host is
// gone (see runDirLock).
func removeStaleRunDirs(tmp string, log *slog.Logger) {
	entries, err := os.ReadDir(tmp)
	if err != nil {
		return
	}
	for _, e := range entries {
		if !e.IsDir() || !strings.HasPrefix(e.Name(), runDirPrefix) {
			continue // symbolic links are not directories here
		}
		dir := filepath.Join(tmp, e.Name())
		pid, err := removeIfStale(dir)
		switch {
		case err != nil:
			log.Warn("run directory of a host that is gone left behind", "dir", dir, "pid", pid, "error", err)
		case pid != "":
			log.Info("removed the run directory of a host that is gone", "dir", dir, "pid", pid)
		}
	}
}

// removeIfStale removes dir if it is the run directory of a host that is
// gone, and returns that host's pid; "" when dir is not such a directory.
func removeIfStale(dir string) (pid string, err error) {
	st, err := os.Lstat(dir)
	if err != nil || !st.IsDir() {
		return "", nil
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); !ok || int(sys.Uid) != os.Geteuid() {
		return "", nil // another user's
	}
	f, err := os.OpenFile(filepath.Join(dir, runDirLock), os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return "", nil // no lock file: not provably a host's
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return "", nil // its host lives (or another host is removing it)
	}
	b := make([]byte, 32)
	n, _ := f.Read(b)
	pid = strings.TrimSpace(string(b[:n]))
	if _, err := strconv.Atoi(pid); err != nil {
		pid = "unknown"
	}
	if err := os.RemoveAll(dir); err != nil {
		return pid, err
	}
	return pid, nil
}
