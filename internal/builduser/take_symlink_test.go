package builduser

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// A build user that replaces its out directory with a symbolic link to a
// directory of the host's must not get Take (running as root) to move the
// host's files into the cache.
func TestTakeRefusesOutSwappedForSymlink(t *testing.T) {
	runner := rootRunner(t)
	victim := t.TempDir() // stands for /etc
	if err := os.WriteFile(filepath.Join(victim, "passwd"), []byte("root:x:0:0"), 0o644); err != nil {
		t.Fatal(err)
	}
	dst := t.TempDir()
	s, out := beginOwned(t, runner, dst)
	// What an install script running as the build user would do. The
	// work directory is root's, so it cannot; the test then does it
	// itself (as root), for Take's own check.
	cmd := s.Command(context.Background(), s.Work(), nil, "/bin/sh", "-c", "mv out out.real && ln -s "+victim+" out")
	if b, err := cmd.CombinedOutput(); err == nil {
		t.Errorf("the build user replaced its out directory: %s", b)
	} else if err := os.Rename(out, out+".real"); err != nil {
		t.Fatal(err)
	} else if err := os.Symlink(victim, out); err != nil {
		t.Fatal(err)
	}
	err := s.Take(out, dst)
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

// A symbolic link the build leaves in its result is taken as a link:
// Take neither follows it (moving or changing what it points to) nor
// drops it.
func TestTakeKeepsLinksUnfollowed(t *testing.T) {
	runner := rootRunner(t)
	victim := t.TempDir()
	if err := os.WriteFile(filepath.Join(victim, "shadow"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	dst := t.TempDir()
	s, out := beginOwned(t, runner, dst)
	cmd := s.Command(context.Background(), out, nil, "/bin/sh", "-c", "mkdir -p node_modules/.bin && ln -s ../pkg/cli.js node_modules/.bin/cli && ln -s "+victim+" etc && ln -s "+victim+"/shadow node_modules/shadow")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
	if err := s.Take(out, dst); err != nil {
		t.Fatal(err)
	}
	for link, want := range map[string]string{"node_modules/.bin/cli": "../pkg/cli.js", "etc": victim, "node_modules/shadow": victim + "/shadow"} {
		if got, err := os.Readlink(filepath.Join(dst, link)); err != nil || got != want {
			t.Errorf("%s: got link to %q (%v), want %q", link, got, err, want)
		}
	}
	st, err := os.Stat(filepath.Join(victim, "shadow"))
	if err != nil {
		t.Fatalf("a linked file of the host's was moved: %v", err)
	}
	if sys := st.Sys().(*syscall.Stat_t); st.Mode().Perm() != 0o600 || sys.Uid != 0 {
		t.Errorf("a linked file of the host's was changed: mode %s uid %d", st.Mode(), sys.Uid)
	}
}

// With names, Take moves only those entries: nothing else the build left
// replaces a file of dst.
func TestTakeOnlyNamed(t *testing.T) {
	runner := rootRunner(t)
	dst := t.TempDir()
	if err := os.WriteFile(filepath.Join(dst, "other"), []byte("another function's binary"), 0o755); err != nil {
		t.Fatal(err)
	}
	s, out := beginOwned(t, runner, dst)
	cmd := s.Command(context.Background(), out, nil, "/bin/sh", "-c", "echo bin > fn.tmp && echo evil > other")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
	if err := s.Take(out, dst, "fn.tmp"); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dst, "other")); string(b) != "another function's binary" {
		t.Errorf("an extra entry of the build replaced a file of dst: %q", b)
	}
	if b, _ := os.ReadFile(filepath.Join(dst, "fn.tmp")); string(b) != "bin\n" {
		t.Errorf("the named entry was not taken: %q", b)
	}
}
