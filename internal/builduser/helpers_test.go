package builduser

import (
	"os"
	"testing"

	"github.com/polyfn/polyfn/internal/config"
	"github.com/polyfn/polyfn/internal/testfs"
	"github.com/polyfn/polyfn/internal/worker"
)

// rootRunner skips the test unless it runs as root (switching users needs
// root), and returns a Runner of the default build users whose work
// directories go under a base they can reach.
func rootRunner(t *testing.T) *Runner {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	base := t.TempDir()
	testfs.Reachable(t, base)
	lo, hi := config.Isolation{UIDs: config.DefaultUIDs}.UIDRange()
	return NewRunner(worker.SharedUsers(lo, hi), base)
}

// beginOwned begins a session of r, closed when the test ends, and returns
// it with its out directory for dst, owned by its build user.
func beginOwned(t *testing.T, r *Runner, dst string) (*Session, string) {
	t.Helper()
	s, err := r.Begin()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	out := s.Out(dst)
	if err := s.Own(out); err != nil {
		t.Fatal(err)
	}
	return s, out
}
