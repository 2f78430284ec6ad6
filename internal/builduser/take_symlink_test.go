package builduser

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/polyfn/polyfn/internal/config"
	"github.com/polyfn/polyfn/internal/worker"
)

// A build user that replaces its out directory with a symbolic link to a
// directory of the host's must not get Take (running as root) to move the
// host's files into the cache.
func TestTakeRefusesOutSwappedForSymlink(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	lo, hi := config.Isolation{UIDs: config.DefaultUIDs}.UIDRange()
	base := t.TempDir()
	for d := base; d != filepath.Clean(os.TempDir()); d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	victim := t.TempDir() // stands for /etc
	if err := os.WriteFile(filepath.Join(victim, "passwd"), []byte("root:x:0:0"), 0o644); err != nil {
		t.Fatal(err)
	}
	dst := t.TempDir()
	s, err := NewRunner(worker.SharedUsers(lo, hi), base).Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	out := s.Out(dst)
	// What an install script running as the build user can do: it owns
	// the work directory.
	cmd := s.Command(context.Background(), s.Work(), nil, "/bin/sh", "-c", "mv out out.real && ln -s "+victim+" out")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
	err = s.Take(out, dst)
	if _, serr := os.Stat(filepath.Join(victim, "passwd")); serr != nil {
		t.Errorf("Take moved a host file out of %s (Take error: %v)", victim, err)
	}
	if _, serr := os.Stat(filepath.Join(dst, "passwd")); serr == nil {
		t.Errorf("a host file was taken into the build result")
	}
	if err == nil {
		t.Errorf("Take accepted an out directory that is a symbolic link")
	}
}
