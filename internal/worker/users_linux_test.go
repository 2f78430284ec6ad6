//go:build linux

package worker

import (
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

func newTestUsers(t testing.TB, lo, hi uint32, lockDir string) *Users {
	return &Users{lo: lo, hi: hi, held: map[uint32]*os.File{}, users: map[uint32]bool{}, lockDir: lockDir}
}

// testUID is the user id n (0 to 15) of this test process's own block of
// 16: far above the default isolation range's first ids, which hosts in
// other packages' tests lease, and chosen by the process id among 60
// blocks (64512-65471), so that test runs side by side on one machine
// (their leases in lock directories of their own) seldom meet, and then
// fail rather than kill each other's processes.
func testUID(n uint32) uint32 {
	return 64512 + uint32(os.Getpid()%60)*16 + n%16
}

// Two hosts (two books over the same lock directory) never hold the same
// id; a released id comes back; a full range says so.
func TestUsersLeases(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	locks := t.TempDir()
	lo := testUID(0)
	a := newTestUsers(t, lo, lo+2, locks)
	b := newTestUsers(t, lo, lo+2, locks)
	seen := map[uint32]bool{}
	for _, u := range []*Users{a, b, a} {
		id, err := u.Take()
		if err != nil {
			t.Fatal(err)
		}
		if seen[id] {
			t.Fatalf("id %d handed out twice", id)
		}
		seen[id] = true
	}
	if id, err := b.Take(); err == nil {
		t.Fatalf("a fourth id %d from a range of three", id)
	}
	for id := range seen {
		if a.held[id] != nil {
			a.Release(id)
			if got, err := b.Take(); err != nil || got != id {
				t.Fatalf("after release of %d: got %d, %v", id, got, err)
			}
			break
		}
	}
}

// Release kills what still runs under the id, even a process in a session
// of its own.
func TestReleaseKillsTheUsersProcesses(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	uid := testUID(8)
	u := newTestUsers(t, uid, uid, t.TempDir())
	id, err := u.Take()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sleep", "1000")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Credential: &syscall.Credential{Uid: id, Gid: id}}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	u.Release(id)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatal("the process of a released id is still running")
	}
}

// BenchmarkTake is what leasing an id adds to an instance's start (the
// release, at its stop, is not counted).
func BenchmarkTake(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	u := newTestUsers(b, 64200, 64299, b.TempDir())
	for b.Loop() {
		id, err := u.Take()
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		u.Release(id)
		b.StartTimer()
	}
}

// BenchmarkTakeRelease is what leasing an id adds to an instance's start
// and stop.
func BenchmarkTakeRelease(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	u := newTestUsers(b, 64100, 64199, b.TempDir())
	for b.Loop() {
		id, err := u.Take()
		if err != nil {
			b.Fatal(err)
		}
		u.Release(id)
	}
}
