package build

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/polyfn/polyfn/internal/builduser"
	"github.com/polyfn/polyfn/internal/config"
	"github.com/polyfn/polyfn/internal/gobuild"
	"github.com/polyfn/polyfn/internal/testfs"
	"github.com/polyfn/polyfn/internal/worker"
)

// userRunner returns a runner of build users from the default uid range,
// making work directories under a directory of the test's; it skips the
// test when the host is not root (only root can run commands as another
// user: builds then run as the host's user, as before).
func userRunner(t *testing.T) (*builduser.Runner, string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("builds run as users of their own only on a host running as root (switching users needs root); this host runs as uid " + strconv.Itoa(os.Geteuid()))
	}
	lo, hi := config.Isolation{UIDs: config.DefaultUIDs}.UIDRange()
	base := filepath.Join(t.TempDir(), "work")
	if err := os.Mkdir(base, 0o711); err != nil {
		t.Fatal(err)
	}
	testfs.Reachable(t, filepath.Dir(base))
	return builduser.NewRunner(worker.SharedUsers(lo, hi), base), base
}

// npmTarball writes a package tarball (as npm pack makes it) with an
// install script that records the user and group it runs as.
func npmTarball(t *testing.T, path string) {
	t.Helper()
	files := map[string]string{
		"package/package.json": `{"name": "recorder", "version": "1.0.0", "main": "index.js",
  "scripts": {"install": "id -u > uid.txt && id -g > gid.txt && env > env.txt"}}`,
		"package/index.js": "const fs = require('fs');\nmodule.exports = () => fs.readFileSync(__dirname + '/uid.txt', 'utf8').trim();\n",
	}
	testfs.WriteTarball(t, path, files)
}

// pythonRecorder writes a local Python project whose build backend (in
// the tree: nothing to download) records, in the module it builds, the
// user and group it runs as.
func pythonRecorder(t *testing.T, dir string) {
	t.Helper()
	write(t, filepath.Join(dir, "pyproject.toml"), `[build-system]
requires = []
build-backend = "backend"
backend-path = ["."]

[project]
name = "recorder"
version = "1.0"
`)
	write(t, filepath.Join(dir, "backend.py"), `import base64, hashlib, os, zipfile

DIST = "recorder-1.0"


def get_requires_for_build_wheel(config_settings=None):
    return []


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    files = {
        "recorder/__init__.py": "UID = %d\nGID = %d\n" % (os.getuid(), os.getgid()),
        DIST + ".dist-info/METADATA": "Metadata-Version: 2.1\nName: recorder\nVersion: 1.0\n",
        DIST + ".dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    name = DIST + "-py3-none-any.whl"
    record = DIST + ".dist-info/RECORD"
    lines = []
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w") as z:
        for path, text in files.items():
            data = text.encode()
            z.writestr(path, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            lines.append("%s,sha256=%s,%d" % (path, digest, len(data)))
        lines.append(record + ",,")
        z.writestr(record, "\n".join(lines) + "\n")
    return name
`)
}

// asUser runs sh -c script as uid (group uid, no other groups).
func asUser(uid uint32, script string) ([]byte, error) {
	cmd := exec.Command("/bin/sh", "-c", script)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid, Groups: []uint32{}}}
	return cmd.CombinedOutput()
}

// On a host running as root, installers run as a user of their own: an npm
// lifecycle script and a Python build backend record a uid that is not 0
// (from isolation.uids); the result is in the cache owned by root, where
// that uid cannot write; nothing of the build's runs afterwards and its
// work directory is gone.
func TestBuildRunsAsUserOfItsOwn(t *testing.T) {
	runner, base := userRunner(t)
	t.Setenv("POLYFN_TEST_HOST_SECRET", "s3cret-of-the-host")
	dir := t.TempDir()
	testfs.Reachable(t, dir)
	tgz := filepath.Join(dir, "recorder-1.0.0.tgz")
	npmTarball(t, tgz)
	write(t, filepath.Join(dir, "nd", "package.json"), `{"name": "fn", "version": "1.0.0", "dependencies": {"recorder": "file:`+tgz+`"}}`)
	pythonRecorder(t, filepath.Join(dir, "recorder"))
	write(t, filepath.Join(dir, "py", "requirements.txt"), "recorder @ file://"+filepath.Join(dir, "recorder")+"\n")
	cfg := load(t, dir, `
state_dir: state
functions:
  - {name: nd, runtime: node, handler: index.handler, codedir: nd}
  - {name: py, runtime: python3, handler: main.handler, codedir: py}
`)
	b := New(Options{Dir: Dir(cfg), Runner: runner})
	results := b.Run(context.Background(), Plan(cfg))
	if len(results) != 2 {
		t.Fatalf("%d results, want 2", len(results))
	}
	lo, hi := config.Isolation{UIDs: config.DefaultUIDs}.UIDRange()
	var recorded []string
	for _, r := range results {
		if r.Err != nil {
			t.Fatalf("%s: %v", r.Function, r.Err)
		}
		var uid, gid string
		var files []string
		switch r.Kind {
		case KindNode:
			files = []string{filepath.Join(r.Path, "recorder", "uid.txt"), filepath.Join(r.Path, "recorder", "gid.txt")}
			uid, gid = testfs.ReadTrim(t, files[0]), testfs.ReadTrim(t, files[1])
		case KindPython:
			files = []string{filepath.Join(r.Path, "recorder", "__init__.py")}
			text := testfs.ReadTrim(t, files[0])
			for _, l := range strings.Split(text, "\n") {
				if v, ok := strings.CutPrefix(l, "UID = "); ok {
					uid = v
				}
				if v, ok := strings.CutPrefix(l, "GID = "); ok {
					gid = v
				}
			}
		}
		n, err := strconv.ParseUint(uid, 10, 32)
		if err != nil || n == 0 || uint32(n) < lo || uint32(n) > hi || gid != uid {
			t.Fatalf("%s: the install step ran as uid %q gid %q; want a uid of its own in %d-%d (gid the same)", r.Function, uid, gid, lo, hi)
		}
		recorded = append(recorded, uid)
		if r.Kind == KindNode {
			// The host's environment is not the install script's: HOME is
			// the build's own, a variable of the host's is absent.
			env := testfs.ReadTrim(t, filepath.Join(r.Path, "recorder", "env.txt"))
			if strings.Contains(env, "s3cret-of-the-host") || !strings.Contains(env, "\nHOME="+base+"/polyfn-build-") {
				t.Errorf("the install script's environment:\n%s", env)
			}
		}
		entry := filepath.Dir(r.Path)
		err = filepath.Walk(entry, func(p string, fi os.FileInfo, err error) error {
			if err != nil {
				return err
			}
			st := fi.Sys().(*syscall.Stat_t)
			if fi.Mode()&os.ModeSymlink == 0 && (st.Uid != 0 || st.Gid != 0 || fi.Mode().Perm()&0o022 != 0 || fi.Mode()&(os.ModeSetuid|os.ModeSetgid) != 0) {
				t.Errorf("%s: %s is uid %d gid %d mode %s; want root's, writable by root alone", r.Function, p, st.Uid, st.Gid, fi.Mode())
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		// The build user cannot change the result, nor add to it: but
		// may read it, as workers do.
		id := uint32(n)
		if out, err := asUser(id, "cat "+files[0]); err != nil {
			t.Errorf("%s: uid %d cannot read the result: %v: %s", r.Function, id, err, out)
		}
		for _, script := range []string{"echo x >> " + files[0], "touch " + filepath.Join(filepath.Dir(files[0]), "new"), "touch " + filepath.Join(entry, "new"), "mkdir " + filepath.Join(filepath.Dir(entry), "new")} {
			if out, err := asUser(id, script); err == nil {
				t.Errorf("%s: uid %d could %q in the cache: %s", r.Function, id, script, out)
			}
		}
	}
	if ents, err := os.ReadDir(base); err != nil || len(ents) != 0 {
		t.Errorf("work directories left in %s: %v %v", base, ents, err)
	}
	t.Logf("install steps ran as uids %v", recorded)
	// Cached: nothing runs again.
	again := New(Options{Dir: Dir(cfg), Runner: runner})
	for _, r := range again.Run(context.Background(), Plan(cfg)) {
		if r.Err != nil || !r.Cached {
			t.Errorf("%s again: cached %v, error %v", r.Function, r.Cached, r.Err)
		}
	}
}

// A codedir the build user cannot read fails the build with an error that
// says why and what to change.
func TestBuildUserCannotReadCodedir(t *testing.T) {
	runner, _ := userRunner(t)
	dir := t.TempDir()
	testfs.Reachable(t, dir)
	write(t, filepath.Join(dir, "private", "py", "requirements.txt"), "six==1.16.0\n")
	if err := os.Chmod(filepath.Join(dir, "private"), 0o700); err != nil {
		t.Fatal(err)
	}
	cfg := load(t, dir, `
state_dir: state
functions:
  - {name: py, runtime: python3, handler: main.handler, codedir: private/py}
`)
	b := New(Options{Dir: Dir(cfg), Runner: runner})
	r := b.Run(context.Background(), Plan(cfg))[0]
	var be *Error
	if !errors.As(r.Err, &be) {
		t.Fatalf("build of an unreadable codedir: %v", r.Err)
	}
	msg := r.Err.Error()
	for _, want := range []string{"cannot read codedir", filepath.Join(dir, "private") + " is mode 0700", "chmod -R o+rX", "isolation.user: host"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not say %q", msg, want)
		}
	}
	if b.Installs() != 0 {
		t.Errorf("%d installers ran", b.Installs())
	}
}

// The go command runs as a user of its own too: a -toolexec wrapper
// records the uid the compiler and linker run as; the binary is root's in
// the cache, the go command's caches (gobuild.SharedCache) are root's
// again after the build.
func TestGoBuildRunsAsUserOfItsOwn(t *testing.T) {
	runner, base := userRunner(t)
	dir := t.TempDir()
	testfs.Reachable(t, dir)
	record := filepath.Join(dir, "record")
	if err := os.Mkdir(record, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(record, 0o777); err != nil {
		t.Fatal(err)
	}
	wrapper := filepath.Join(dir, "toolexec.sh")
	write(t, wrapper, "#!/bin/sh\nid -u >> "+filepath.Join(record, "uids")+"\nexec \"$@\"\n")
	if err := os.Chmod(wrapper, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("GOFLAGS", "-toolexec="+wrapper)
	write(t, filepath.Join(dir, "gofn", "go.mod"), "module example.com/gofn\n\ngo 1.22\n")
	write(t, filepath.Join(dir, "gofn", "main.go"), "package main\n\nfunc main() {}\n")
	cfg := load(t, dir, `
state_dir: state
functions:
  - {name: gofn, runtime: go, codedir: gofn}
  - {name: same, runtime: go, codedir: gofn}
`)
	b := New(Options{Dir: Dir(cfg), Runner: runner})
	results := b.Run(context.Background(), Plan(cfg)) // the same entry twice, at once
	r := results[0]
	for _, res := range results {
		if res.Err != nil || res.Path != r.Path {
			t.Fatalf("%s: %s %v", res.Function, res.Path, res.Err)
		}
	}
	uids := strings.Fields(testfs.ReadTrim(t, filepath.Join(record, "uids")))
	if len(uids) == 0 {
		t.Fatal("the go command ran no tool through -toolexec")
	}
	for _, u := range uids {
		if u == "0" {
			t.Fatalf("a Go tool ran as root: uids %v", uids)
		}
	}
	var st syscall.Stat_t
	if err := syscall.Stat(r.Path, &st); err != nil {
		t.Fatal(err)
	}
	if st.Uid != 0 || st.Mode&0o7777 != 0o755 {
		t.Errorf("binary %s: uid %d mode %04o; want root's, 0755", r.Path, st.Uid, st.Mode&0o7777)
	}
	var err error
	for _, d := range []string{filepath.Join(Dir(cfg), "go"), gobuild.SharedCache} {
		err = errors.Join(err, filepath.Walk(d, func(p string, fi os.FileInfo, err error) error {
			if err != nil {
				return err
			}
			if s := fi.Sys().(*syscall.Stat_t); s.Uid != 0 {
				return errors.New(p + " is uid " + strconv.Itoa(int(s.Uid)) + " after the build")
			}
			return nil
		}))
	}
	if err != nil {
		t.Error(err)
	}
	if ents, err := os.ReadDir(base); err != nil || len(ents) != 0 {
		t.Errorf("work directories left in %s: %v %v", base, ents, err)
	}
}

// polyfn validate loads each handler (its module-level code runs) as the
// user builds run as: a module that refuses to be imported as root loads.
func TestCheckRunsAsUserOfItsOwn(t *testing.T) {
	userRunner(t)
	dir := t.TempDir()
	testfs.Reachable(t, dir)
	write(t, filepath.Join(dir, "py", "main.py"), "import os\n\nif os.getuid() == 0:\n    raise RuntimeError('imported as root')\n\n\ndef handler(event, context):\n    return None\n")
	write(t, filepath.Join(dir, "nd", "index.js"), "if (process.getuid() === 0) throw new Error('loaded as root');\nexports.handler = async () => null;\n")
	cfg := load(t, dir, `
functions:
  - {name: py, runtime: python3, handler: main.handler, codedir: py}
  - {name: nd, runtime: node, handler: index.handler, codedir: nd}
`)
	if problems := Check(context.Background(), cfg, nil, 0); len(problems) != 0 {
		t.Fatalf("problems: %v", problems)
	}
}
