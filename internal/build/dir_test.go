package build

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/polyfn/polyfn/internal/testfs"
)

// build.dir is relative to the config file; without it the cache is
// StateDir/build.
func TestDir(t *testing.T) {
	dir := t.TempDir()
	cfg := load(t, dir, "state_dir: state\nbuild: {dir: cache/build}\n")
	if got, want := Dir(cfg), filepath.Join(dir, "cache", "build"); got != want {
		t.Errorf("build.dir: cache/build gives %s, want %s", got, want)
	}
	cfg = load(t, dir, "state_dir: state\n")
	if got, want := Dir(cfg), filepath.Join(dir, "state", "build"); got != want {
		t.Errorf("without build.dir: %s, want %s", got, want)
	}
}

// A cache built ahead of time is only read: a second builder (a host
// started on the image's cache) finds the Go function's binary there, runs
// no installer and changes nothing under the cache directory, which may
// therefore be read-only.
func TestFreshCacheIsOnlyRead(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a Go function")
	}
	dir := t.TempDir()
	write(t, filepath.Join(dir, "fn", "go.mod"), "module example.com/fn\n\ngo 1.24\n")
	write(t, filepath.Join(dir, "fn", "main.go"), "package main\n\nfunc main() {}\n")
	cfg := load(t, dir, "build: {dir: cache}\nfunctions:\n  - {name: fn, runtime: go, codedir: fn}\n")
	specs := Plan(cfg)
	if len(specs) != 1 {
		t.Fatalf("plan: %+v", specs)
	}
	first := New(Options{Dir: Dir(cfg)})
	r := first.Run(context.Background(), specs)[0]
	if r.Err != nil || r.Cached {
		t.Fatalf("first build: %+v", r)
	}
	// Read-only, as a non-root user would find the image's cache (root
	// writes whatever the modes; the tree's comparison catches it then).
	if err := filepath.WalkDir(Dir(cfg), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		st, err := os.Lstat(p)
		if err != nil {
			return err
		}
		return os.Chmod(p, st.Mode().Perm()&^0o222)
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = filepath.WalkDir(Dir(cfg), func(p string, _ fs.DirEntry, _ error) error { return os.Chmod(p, 0o755) })
	})
	before := testfs.Snapshot(t, Dir(cfg))
	second := New(Options{Dir: Dir(cfg)})
	r = second.Run(context.Background(), Plan(cfg))[0]
	if r.Err != nil || !r.Cached || second.Installs() != 0 {
		t.Fatalf("second build on the fresh cache: %+v, %d installers run", r, second.Installs())
	}
	if after := testfs.Snapshot(t, Dir(cfg)); after != before {
		t.Errorf("the second build changed the cache:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}
