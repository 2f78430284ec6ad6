package builduser

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/polyfn/polyfn/internal/config"
	"github.com/polyfn/polyfn/internal/testfs"
	"github.com/polyfn/polyfn/internal/worker"
)

// Cancelling a build command kills its whole process group: a process
// the installer left in the background dies with it.
func TestCommandKillsItsGroup(t *testing.T) {
	var s *Session // the host's user
	ctx, cancel := context.WithCancel(context.Background())
	cmd := s.Command(ctx, t.TempDir(), nil, "/bin/sh", "-c", "sleep 300 & echo started; wait")
	var out bytes.Buffer
	cmd.Stdout = &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pgid := cmd.Process.Pid
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(readProcs(pgid), "sleep") {
		if time.Now().After(deadline) {
			t.Fatal("the background sleep did not start")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	_ = cmd.Wait()
	for readProcs(pgid) != "" {
		if time.Now().After(deadline) {
			syscall.Kill(-pgid, syscall.SIGKILL)
			t.Fatal("a process of the cancelled command's group outlived it")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// readProcs returns the command names of the live (not zombie)
// processes of group pgid.
func readProcs(pgid int) string {
	ents, _ := os.ReadDir("/proc")
	var names []string
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		i := bytes.LastIndexByte(stat, ')')
		if err != nil || i < 0 {
			continue
		}
		// pid (comm) state ppid pgrp ...
		f := strings.Fields(string(stat[i+1:]))
		if len(f) < 3 || f[0] == "Z" || f[0] == "X" || f[2] != strconv.Itoa(pgid) {
			continue
		}
		_ = pid
		names = append(names, string(stat[bytes.IndexByte(stat, '(')+1:i]))
	}
	return strings.Join(names, " ")
}

// A sandboxed build gets the installers' variables of the host's
// environment, not the others.
func TestEnviron(t *testing.T) {
	got := strings.Join(Environ([]string{"PATH=/bin", "AWS_SECRET_ACCESS_KEY=x", "GOPROXY=off", "npm_config_registry=r", "PIP_INDEX_URL=i", "POLYFN_KEY=k", "HTTPS_PROXY=p", "HOME=/root"}), " ")
	if want := "PATH=/bin GOPROXY=off npm_config_registry=r PIP_INDEX_URL=i HTTPS_PROXY=p"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

// Take makes the build's result root's and refuses an entry the build
// user does not own: a hard link to a file of the host's would otherwise
// be made readable by everyone.
func TestTake(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("a build runs as a user of its own only on a host running as root (switching users needs root); this host runs as uid " + strconv.Itoa(os.Geteuid()))
	}
	lo, hi := config.Isolation{UIDs: config.DefaultUIDs}.UIDRange()
	base := t.TempDir()
	runner := NewRunner(worker.SharedUsers(lo, hi), base)
	// A base the build user cannot enter is refused with the reason.
	if s, err := runner.Begin(); err == nil || !strings.Contains(err.Error(), "cannot reach its work directory") {
		s.Close()
		t.Fatalf("a work directory out of the build user's reach: %v", err)
	}
	testfs.Reachable(t, base)
	dst := t.TempDir()

	s, out := beginOwned(t, runner, dst)
	cmd := s.Command(context.Background(), out, nil, "/bin/sh", "-c", "mkdir -p pkg && echo hi > pkg/file && chmod 4777 pkg/file && chmod 777 pkg")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
	if err := s.Take(out, dst); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]os.FileMode{"pkg": os.ModeDir | 0o755, "pkg/file": 0o755} {
		st, err := os.Lstat(filepath.Join(dst, p))
		if err != nil {
			t.Fatal(err)
		}
		if sys := st.Sys().(*syscall.Stat_t); sys.Uid != 0 || sys.Gid != 0 || st.Mode() != want {
			t.Errorf("%s: uid %d gid %d mode %s; want root's, %s", p, sys.Uid, sys.Gid, st.Mode(), want)
		}
	}
	s.Close()
	if _, err := os.Stat(s.Work()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the work directory is left: %v", err)
	}

	s2, err := runner.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	out = s2.Out(dst)
	if err := os.Link(secret, filepath.Join(out, "link")); err != nil {
		t.Fatal(err)
	}
	err = s2.Take(out, t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "not by the build user") {
		t.Fatalf("a hard link to a file of root's was taken: %v", err)
	}
	if st, _ := os.Stat(secret); st.Mode().Perm() != 0o600 {
		t.Errorf("the linked file's mode changed to %s", st.Mode())
	}
}

// BenchmarkSession is what running a build's command as a user of its own
// adds: leasing the id, making and removing the work directory, killing
// what is left under the id, with one trivial command.
func BenchmarkSession(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("sessions of a user of their own need root")
	}
	lo, hi := config.Isolation{UIDs: config.DefaultUIDs}.UIDRange()
	runner := NewRunner(worker.SharedUsers(lo, hi), "")
	for b.Loop() {
		s, err := runner.Begin()
		if err != nil {
			b.Fatal(err)
		}
		if err := s.Command(context.Background(), s.Work(), nil, "/bin/true").Run(); err != nil {
			b.Fatal(err)
		}
		s.Close()
	}
}
