//go:build linux

package worker

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"
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

	mu    sync.Mutex
	held  map[uint32]*os.File
	users map[uint32]bool // uid → names a user of the machine's
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
	u := &Users{lo: lo, hi: hi, held: map[uint32]*os.File{}, users: map[uint32]bool{}, lockDir: usersLockDir()}
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

// Take leases a free id, the lowest that is free (so that ids released
// cleanly are reused and the range is not swept). An id another polyfn host
// held when it died is taken after the processes it left under that id are
// killed; an id never leased before is skipped while any process runs
// under it (it belongs to something else). The caller must Release it.
func (u *Users) Take() (uint32, error) {
	if err := os.MkdirAll(u.lockDir, 0o700); err != nil {
		return 0, fmt.Errorf("user id locks: %w", err)
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	for uid := u.lo; ; uid++ {
		if u.held[uid] == nil && !u.machineUser(uid) {
			f, err := u.lease(uid)
			if err != nil {
				return 0, err
			}
			if f != nil {
				u.held[uid] = f
				return uid, nil
			}
		}
		if uid == u.hi {
			break
		}
	}
	return 0, fmt.Errorf("%w: all %d ids of %d-%d are in use (isolation.uids)", ErrNoFreeUser, u.hi-u.lo+1, u.lo, u.hi)
}

// machineUser reports whether uid names a user of the machine's user
// database; the answer is remembered.
func (u *Users) machineUser(uid uint32) bool {
	if known, ok := u.users[uid]; ok {
		return known
	}
	_, err := user.LookupId(strconv.FormatUint(uint64(uid), 10))
	u.users[uid] = err == nil
	return err == nil
}

// lease locks uid's file; nil without an error means the id is not free.
func (u *Users) lease(uid uint32) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(u.lockDir, strconv.FormatUint(uint64(uid), 10)), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("user id lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close() // another host's
		return nil, nil
	}
	mark := make([]byte, 8)
	n, _ := f.ReadAt(mark, 0)
	switch string(mark[:n]) {
	case freeMark: // released cleanly: nothing runs under it
	case heldMark:
		// Leased by a host that died: what it left is ours.
		if err := KillUser(uid); err != nil {
			f.Close()
			return nil, nil // still in use: skip it
		}
	default:
		if killUserOnce(uid, false) > 0 {
			f.Close() // never ours, and in use
			return nil, nil
		}
	}
	if _, err := f.WriteAt([]byte(heldMark), 0); err != nil {
		f.Close()
		return nil, fmt.Errorf("user id lock: %w", err)
	}
	return f, nil
}

// Release kills every process still running under uid and ends its lease.
// When some survive (KillUser fails), the id stays leased, never handed out
// again by this process, and its lock file says held, so that the next
// host to lease it kills them first. It is safe to call for an id that is
// not leased.
func (u *Users) Release(uid uint32) {
	if KillUser(uid) != nil {
		return
	}
	u.mu.Lock()
	f := u.held[uid]
	delete(u.held, uid)
	u.mu.Unlock()
	if f != nil {
		_, _ = f.WriteAt([]byte(freeMark), 0)
		f.Close() // drops the lock
	}
}

// What a lock file holds: freeMark while its id is not leased, heldMark
// while it is (the same length: one is written over the other).
const (
	freeMark = "free"
	heldMark = "held"
)

// KillUser kills every process whose user id is uid and returns once none
// is left, or an error naming how many remain after KillUserTimeout.
//
// Running as root, it kills them as uid itself: a helper (kill(1), run as
// uid) calls kill(-1, SIGKILL), which the kernel delivers to every process
// of uid at once, so a process forking in a loop cannot hop ahead of it the
// way it can outrun a scan of /proc. A scan of /proc then kills (and
// counts) what is left, until nothing is.
func KillUser(uid uint32) error {
	if uid == 0 || int(uid) == os.Getuid() {
		return nil // never the host's own
	}
	deadline := time.Now().Add(KillUserTimeout)
	pause := time.Millisecond
	for {
		if os.Geteuid() == 0 {
			killAs(uid)
		}
		killUserOnce(uid, true)
		n := killUserOnce(uid, false)
		if n == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d processes of user id %d still run after %v of killing them", n, uid, KillUserTimeout)
		}
		time.Sleep(pause) // killed processes take a moment to exit
		pause = min(2*pause, 50*time.Millisecond)
	}
}

// KillUserTimeout bounds how long KillUser keeps killing the processes of
// a user id before it gives up with an error. docs/security.md documents it.
const KillUserTimeout = 10 * time.Second

// killTools are where kill(1) is looked for; the first that exists is used.
var killTools = []string{"/bin/kill", "/usr/bin/kill"}

// killAs runs kill -9 -- -1 as uid (no groups, no environment): every process
// the helper may signal, that is every process of uid but itself, is sent
// SIGKILL in one system call.
func killAs(uid uint32) {
	for _, tool := range killTools {
		if st, err := os.Stat(tool); err != nil || !st.Mode().IsRegular() {
			continue
		}
		cmd := exec.Command(tool, "-9", "--", "-1")
		cmd.Dir = "/"
		cmd.Env = []string{}
		cmd.SysProcAttr = &syscall.SysProcAttr{
			Credential: &syscall.Credential{Uid: uid, Gid: uid, Groups: []uint32{}},
			Pdeathsig:  syscall.SIGKILL,
		}
		_ = cmd.Run() // it fails when nothing was left to kill; the scan counts
		return
	}
}

// killUserOnce kills (or with kill false, counts) the live processes of uid.
func killUserOnce(uid uint32, kill bool) int {
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
		if !kill || syscall.Kill(pid, syscall.SIGKILL) == nil {
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
