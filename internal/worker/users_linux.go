//go:build linux

package worker

import (
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
)

// Users hands out user ids for workers to run as, one per instance: a
// worker with an id of its own cannot signal, trace or read the memory,
// environment or files of the host or of any other instance.
//
// An id is leased while an instance holds it. Leases are also held across
// processes by a lock file per id (in /run/polyfn/uids, or the temporary
// directory when /run is not writable), so two hosts with the same range
// never hand out the same id; a host that died releases its ids with its
// locks. Ids that name a user in the user database are skipped.
type Users struct {
	lo, hi  uint32
	lockDir string

	mu   sync.Mutex
	next uint32
	held map[uint32]*os.File
}

var (
	sharedMu    sync.Mutex
	sharedUsers = map[[2]uint32]*Users{}
)

// SharedUsers returns the process's lease book for the ids lo..hi: every
// host of the process (configuration generations overlap during a reload)
// must take ids from the same one.
func SharedUsers(lo, hi uint32) *Users {
	sharedMu.Lock()
	defer sharedMu.Unlock()
	k := [2]uint32{lo, hi}
	if u := sharedUsers[k]; u != nil {
		return u
	}
	u := &Users{lo: lo, hi: hi, next: lo, held: map[uint32]*os.File{}, lockDir: usersLockDir()}
	sharedUsers[k] = u
	return u
}

func usersLockDir() string {
	d := "/run/polyfn/uids"
	if err := os.MkdirAll(d, 0o700); err == nil {
		return d
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("polyfn-uids-%d", os.Geteuid()))
}

// Range returns the ids the book hands out.
func (u *Users) Range() (lo, hi uint32) { return u.lo, u.hi }

// ErrNoFreeUser is returned by Take when every id of the range is leased.
var ErrNoFreeUser = errors.New("no free user id for a worker")

// Take leases a free id. Processes left running under it (by a host killed
// before it could clean up) are killed first. The caller must Release it.
func (u *Users) Take() (uint32, error) {
	if err := os.MkdirAll(u.lockDir, 0o700); err != nil {
		return 0, fmt.Errorf("user id locks: %w", err)
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	n := u.hi - u.lo + 1
	for i := uint32(0); i < n; i++ {
		uid := u.lo + (u.next-u.lo+i)%n
		if u.held[uid] != nil {
			continue
		}
		if _, err := user.LookupId(strconv.FormatUint(uint64(uid), 10)); err == nil {
			continue // a user of the machine's
		}
		f, err := os.OpenFile(filepath.Join(u.lockDir, strconv.FormatUint(uint64(uid), 10)), os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return 0, fmt.Errorf("user id lock: %w", err)
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			f.Close() // another host's
			continue
		}
		KillUser(uid)
		u.held[uid] = f
		u.next = uid + 1
		if u.next > u.hi {
			u.next = u.lo
		}
		return uid, nil
	}
	return 0, fmt.Errorf("%w: all %d ids of %d-%d are in use (isolation.uids)", ErrNoFreeUser, n, u.lo, u.hi)
}

// Release kills every process still running under uid and ends its lease.
// It is safe to call for an id that is not leased.
func (u *Users) Release(uid uint32) {
	KillUser(uid)
	u.mu.Lock()
	f := u.held[uid]
	delete(u.held, uid)
	u.mu.Unlock()
	if f != nil {
		f.Close() // drops the lock
	}
}

// KillUser sends SIGKILL to every process whose user id is uid, again
// until none is left (processes forking meanwhile are caught by the next
// pass), for at most a bounded number of passes.
func KillUser(uid uint32) {
	if uid == 0 || int(uid) == os.Getuid() {
		return // never the host's own
	}
	for pass := 0; pass < killUserPasses; pass++ {
		if killUserOnce(uid) == 0 {
			return
		}
	}
}

// killUserPasses bounds KillUser's scans of /proc.
const killUserPasses = 20

func killUserOnce(uid uint32) int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	n := 0
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		var st syscall.Stat_t
		if syscall.Stat("/proc/"+e.Name(), &st) != nil || st.Uid != uid || zombie(pid) {
			continue
		}
		if syscall.Kill(pid, syscall.SIGKILL) == nil {
			n++
		}
	}
	return n
}

// zombie reports whether pid has exited and waits to be reaped.
func zombie(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true // gone
	}
	// pid (comm) S ...: the state follows the last parenthesis.
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] == ')' {
			return i+2 < len(b) && (b[i+2] == 'Z' || b[i+2] == 'X')
		}
	}
	return false
}
