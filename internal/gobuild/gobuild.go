// Package gobuild builds the main packages of Go functions with the go
// command, into a cache keyed by their source, so a binary is rebuilt only
// when its source changed.
package gobuild

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"

	"github.com/polyfn/polyfn/internal/builduser"
)

// Builder builds and caches function binaries. It is safe for concurrent use.
type Builder struct {
	// Dir is the cache directory.
	Dir string

	mu    sync.Mutex
	locks map[string]*sync.Mutex

	// toolchain is `go env GOVERSION GOOS GOARCH`, read once: the go
	// command is slow to start and its answer does not change.
	toolchainOnce sync.Once
	toolchain     []byte
	toolchainErr  error
	// modcache is `go env GOMODCACHE`: packages there never change.
	modcache []byte

	// Go is the go command (runtimes.GoTool). SDK and API are the
	// directories of the Go SDK's module and of the protocol module it
	// requires, added to the builds of functions outside polyfn's own
	// module (sdk.go); empty when polyfn carries none.
	Go, SDK, API string

	// Runner, when set, runs the go commands as a user of their own
	// (user.go, internal/builduser).
	Runner *builduser.Runner
}

// New returns a builder caching under dir.
// It builds with the go command and the Go SDK found where polyfn runs
// (internal/runtimes).
func New(dir string) *Builder {
	b := &Builder{Dir: dir, locks: map[string]*sync.Mutex{}}
	b.locate()
	return b
}

// DefaultDir is the user's cache directory for polyfn's Go builds.
func DefaultDir() string {
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "polyfn", "go")
	}
	return filepath.Join(os.TempDir(), "polyfn-go-cache")
}

// CompileError is a build that failed; Output is what the go command said.
type CompileError struct {
	Dir    string
	Output string
}

func (e *CompileError) Error() string {
	return fmt.Sprintf("go build in %s failed:\n%s", e.Dir, strings.TrimSpace(e.Output))
}

// Build returns the path of the binary built from the main package in
// codedir, building it if no binary for the current source is cached.
// Cancelling ctx stops a build in progress.
func (b *Builder) Build(ctx context.Context, codedir string) (string, error) {
	r := &run{b: b}
	defer func() { r.close() }()
	key, modArgs, err := b.key(ctx, r, codedir)
	if err != nil {
		return "", err
	}
	out := filepath.Join(b.Dir, key, "function")
	lock := b.lock(key)
	// A session holds the shared caches (user.go) and a build takes them
	// under the entry's lock: the session of the key's go commands does
	// not wait for the entry's lock, it ends first.
	if !lock.TryLock() {
		r.close()
		lock.Lock()
	}
	defer lock.Unlock()
	if st, err := os.Stat(out); err == nil && st.Mode().IsRegular() {
		return out, nil
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return "", err
	}
	// No VCS stamping: the function's binary does not depend on the state of
	// a repository around its code (which the build user may not read).
	cmd, err := b.command(ctx, r, codedir, modArgs, "build", "-buildvcs=false", "-o", "", ".")
	if err != nil {
		return "", err
	}
	// Sandboxed, the binary is written into the session's out directory
	// and taken into the cache (builduser.Session.Take).
	tmpDir := r.s.Out(filepath.Dir(out))
	if err := r.s.Own(tmpDir); err != nil {
		return "", err
	}
	tmpName := filepath.Base(out) + ".tmp"
	tmp := filepath.Join(tmpDir, tmpName)
	for i, a := range cmd.Args {
		if a == "-o" {
			cmd.Args[i+1] = tmp
			break
		}
	}
	var output bytes.Buffer
	cmd.Stdout, cmd.Stderr = &output, &output
	if err := cmd.Run(); err != nil {
		os.Remove(tmp)
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return "", &CompileError{Dir: codedir, Output: output.String()}
		}
		return "", fmt.Errorf("go build: %w", err)
	}
	// Only the binary: anything else the build left in its out directory
	// must not replace a file of the shared binary directory.
	if err := r.s.Take(tmpDir, filepath.Dir(out), tmpName); err != nil {
		return "", err
	}
	if err := os.Rename(filepath.Join(filepath.Dir(out), tmpName), out); err != nil {
		return "", err
	}
	return out, nil
}

func (b *Builder) lock(key string) *sync.Mutex {
	b.mu.Lock()
	defer b.mu.Unlock()
	l, ok := b.locks[key]
	if !ok {
		l = &sync.Mutex{}
		b.locks[key] = l
	}
	return l
}

// key hashes what the binary depends on that can change: the go version,
// every file under codedir (names and contents, hidden directories
// skipped), the go.mod and go.sum of the module holding it, and the files
// of the packages it imports from outside the module cache (the module's
// other packages, local replace targets), which can change too.
// It returns the go command's module flags too (sdkArgs).
func (b *Builder) key(ctx context.Context, r *run, codedir string) (string, []string, error) {
	own, err := b.ownKey(codedir)
	if err != nil {
		return "", nil, err
	}
	modArgs, err := b.sdkArgs(ctx, codedir, own)
	if err != nil {
		return "", nil, err
	}
	deps, err := b.localDeps(ctx, r, codedir, own, modArgs)
	if err != nil {
		return "", nil, err
	}
	h := sha256.New()
	h.Write([]byte(own))
	for _, dir := range deps {
		ents, err := os.ReadDir(dir)
		if err != nil {
			fmt.Fprintf(h, "missing %s\n", dir)
			continue
		}
		for _, e := range ents {
			if !e.Type().IsRegular() {
				continue
			}
			if err := hashFile(h, filepath.Join(dir, e.Name())); err != nil {
				return "", nil, err
			}
		}
	}
	return hex.EncodeToString(h.Sum(nil))[:32], modArgs, nil
}

// localDeps returns the directories of the packages codedir's build uses
// that lie outside codedir, the standard library and the module cache. The
// go command is slow to ask, and the answer only changes with codedir's own
// files or go.mod, so it is kept on disk under own (the key of those).
func (b *Builder) localDeps(ctx context.Context, r *run, codedir, own string, modArgs []string) ([]string, error) {
	memo := filepath.Join(b.Dir, "deps", own)
	if data, err := os.ReadFile(memo); err == nil {
		return strings.Fields(string(data)), nil
	}
	abs, err := filepath.Abs(codedir)
	if err != nil {
		return nil, err
	}
	cmd, err := b.command(ctx, r, abs, modArgs, "list", "-e", "-deps", "-f", "{{if not .Standard}}{{.Dir}}{{end}}", ".")
	if err != nil {
		return nil, err
	}
	out, err := cmd.Output()
	if err != nil {
		// The build reports what is wrong; without the list the key is
		// codedir's alone.
		return nil, nil
	}
	inCache := func(d string) bool {
		for _, c := range []string{strings.TrimSpace(string(b.modcache)), r.modcache()} {
			if c != "" && strings.HasPrefix(d, c+string(filepath.Separator)) {
				return true
			}
		}
		return false
	}
	var deps []string
	for _, d := range strings.Fields(string(out)) {
		if d == abs || strings.HasPrefix(d, abs+string(filepath.Separator)) || inCache(d) {
			continue
		}
		deps = append(deps, d)
	}
	sort.Strings(deps)
	if err := os.MkdirAll(filepath.Dir(memo), 0o755); err == nil {
		tmp := memo + ".tmp"
		if os.WriteFile(tmp, []byte(strings.Join(deps, "\n")), 0o644) == nil {
			_ = os.Rename(tmp, memo)
		}
	}
	return deps, nil
}

// hashFile writes f's name and the digest of its contents to h. Digests
// are remembered by size, modification time and inode, so that the files
// of an unchanged function are read once per process, not at every start.
func hashFile(h io.Writer, f string) error {
	st, err := os.Stat(f)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	id := fileID{size: st.Size(), mtime: st.ModTime().UnixNano()}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		id.ino = sys.Ino
	}
	digests.Lock()
	d, ok := digests.m[f]
	digests.Unlock()
	if !ok || d.id != id {
		fh, err := os.Open(f)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		sum := sha256.New()
		_, err = io.Copy(sum, fh)
		fh.Close()
		if err != nil {
			return err
		}
		d = digest{id: id}
		sum.Sum(d.sum[:0])
		digests.Lock()
		digests.m[f] = d
		digests.Unlock()
	}
	fmt.Fprintf(h, "file %s %x\n", f, d.sum)
	return nil
}

type fileID struct {
	size, mtime int64
	ino         uint64
}

type digest struct {
	id  fileID
	sum [sha256.Size]byte
}

// digests remembers file digests for the life of the process.
var digests = struct {
	sync.Mutex
	m map[string]digest
}{m: map[string]digest{}}

// ownKey hashes the go version, codedir's files and its module's go.mod
// and go.sum.
func (b *Builder) ownKey(codedir string) (string, error) {
	h := sha256.New()
	b.toolchainOnce.Do(func() {
		b.toolchain, b.toolchainErr = b.goEnv("GOVERSION", "GOOS", "GOARCH")
		if b.toolchainErr == nil {
			b.modcache, _ = b.goEnv("GOMODCACHE")
		}
	})
	if b.toolchainErr != nil {
		return "", fmt.Errorf("the go command is needed to build Go functions: %w", b.toolchainErr)
	}
	h.Write(b.toolchain)
	abs, err := filepath.Abs(codedir)
	if err != nil {
		return "", err
	}
	fmt.Fprintf(h, "dir %s\n", abs)
	fmt.Fprintf(h, "sdk %s %s\n", b.SDK, b.API)
	var files []string
	err = filepath.WalkDir(abs, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && p != abs && strings.HasPrefix(d.Name(), ".") {
			return filepath.SkipDir
		}
		if d.Type().IsRegular() {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	if root := moduleRoot(abs); root != "" {
		for _, f := range []string{"go.mod", "go.sum"} {
			if p := filepath.Join(root, f); !strings.HasPrefix(p, abs+string(filepath.Separator)) {
				files = append(files, p)
			}
		}
	}
	sort.Strings(files)
	for _, f := range files {
		if err := hashFile(h, f); err != nil {
			return "", err
		}
	}
	return hex.EncodeToString(h.Sum(nil))[:32], nil
}

// goEnv returns the output of `go env vars...`, remembered on disk (under
// Dir/env) by the identity of the go binary and the environment variables
// that change the answer: a go command takes tens of milliseconds to
// start, which an unchanged function should not cost.
func (b *Builder) goEnv(vars ...string) ([]byte, error) {
	goBin, err := exec.LookPath(b.goTool())
	if err != nil {
		return nil, err
	}
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%q\n", goBin, vars)
	if real, err := filepath.EvalSymlinks(goBin); err == nil {
		if st, err := os.Stat(real); err == nil {
			fmt.Fprintf(h, "%s %d %d\n", real, st.Size(), st.ModTime().UnixNano())
		}
	}
	for _, v := range []string{"GOTOOLCHAIN", "GOROOT", "GOPATH", "GOMODCACHE", "GOOS", "GOARCH", "GOENV", "HOME", "XDG_CONFIG_HOME"} {
		fmt.Fprintf(h, "%s=%s\n", v, os.Getenv(v))
	}
	memo := filepath.Join(b.Dir, "env", hex.EncodeToString(h.Sum(nil))[:32])
	if data, err := os.ReadFile(memo); err == nil && len(data) > 0 {
		return data, nil
	}
	out, err := exec.Command(goBin, append([]string{"env"}, vars...)...).Output()
	if err != nil {
		return nil, err
	}
	if os.MkdirAll(filepath.Dir(memo), 0o755) == nil {
		tmp := memo + ".tmp"
		if os.WriteFile(tmp, out, 0o644) == nil {
			_ = os.Rename(tmp, memo)
		}
	}
	return out, nil
}

// moduleRoot returns the directory of the go.mod governing dir, or "".
func moduleRoot(dir string) string {
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
		if filepath.Dir(d) == d {
			return ""
		}
	}
}
