package builduser

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// A shared directory a session did not give back (its host died
// mid-build) is wiped before it is shared again, whether it is still
// another user's or was given back to root without its mark removed; one
// a session gave back is kept, root's and unmarked.
func TestShareWipesWhatASessionDidNotGiveBack(t *testing.T) {
	runner := rootRunner(t)
	caches := t.TempDir()
	build, mod := filepath.Join(caches, "build"), filepath.Join(caches, "mod")
	for _, d := range []string{build, mod} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "poisoned"), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// build: still owned by the dead session's user. mod: root's again,
	// but marked.
	if err := chownTree(build, 64999); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(sharedMark(mod), []byte("64999\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := runner.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Share(build, mod); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{build, mod} {
		if _, err := os.Lstat(filepath.Join(d, "poisoned")); err == nil {
			t.Errorf("%s was shared again with what a dead session left in it", d)
		}
		if err := os.WriteFile(filepath.Join(d, "kept"), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	for _, d := range []string{build, mod} {
		var st syscall.Stat_t
		if err := syscall.Lstat(d, &st); err != nil || st.Uid != 0 {
			t.Errorf("%s not given back to root: uid %d, %v", d, st.Uid, err)
		}
		if _, err := os.Lstat(sharedMark(d)); err == nil {
			t.Errorf("%s is still marked shared after Close", d)
		}
		if err := Reclaim(d); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Lstat(filepath.Join(d, "kept")); err != nil {
			t.Errorf("a directory given back cleanly was wiped: %v", err)
		}
	}
}
