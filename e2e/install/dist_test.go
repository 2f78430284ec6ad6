package install

import (
	"archive/tar"
	"compress/gzip"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/polyfn/polyfn/internal/runtimes"
)

// distArchive returns the path of the archive make dist wrote for arch in
// the repository's dist/, after checking it against dist/SHA256SUMS. With
// no archive the test is skipped, except in CI (CI set), which runs make
// dist first (.ci/run).
func distArchive(t *testing.T, repo, arch string) string {
	t.Helper()
	matches, _ := filepath.Glob(filepath.Join(repo, "dist", "polyfn-*-linux-"+arch+".tar.gz"))
	if len(matches) != 1 {
		if os.Getenv("CI") != "" {
			t.Fatalf("want one linux/%s archive in dist/, found %d: make dist runs before the tests in CI", arch, len(matches))
		}
		t.Skipf("no single linux/%s archive in dist/ (found %d): run make dist", arch, len(matches))
	}
	archive := matches[0]
	sums, err := os.ReadFile(filepath.Join(repo, "dist", "SHA256SUMS"))
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(archive)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	want := hex.EncodeToString(sum[:]) + "  " + filepath.Base(archive)
	if !strings.Contains(string(sums), want+"\n") {
		t.Errorf("SHA256SUMS lacks %q:\n%s", want, sums)
	}
	return archive
}

// The amd64 release archive, as a new user would use it: unpacked with tar
// into an empty directory and run with a PATH of system directories only
// and the Go module proxy off, its polyfn finds its runtimes beside itself
// (the Python runtime with no set-up: no virtualenv made, nothing
// installed) and serves the archive's own examples in Python, Node.js and
// Go.
func TestReleaseArchive(t *testing.T) {
	if testing.Short() {
		t.Skip("unpacks and serves a release archive")
	}
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	archive := distArchive(t, repo, "amd64")
	dir := tempDir(t)
	run(t, dir, systemEnv(), "tar", "-xzf", archive)
	root := filepath.Join(dir, strings.TrimSuffix(filepath.Base(archive), ".tar.gz"))
	for _, f := range []string{"LICENSE", "CHANGELOG.md", "README.md", "docs/operations.md", "examples/polyfn.yaml"} {
		if _, err := os.Stat(filepath.Join(root, f)); err != nil {
			t.Errorf("the archive lacks %s: %v", f, err)
		}
	}
	// The SDK's third-party dependencies come through the environment's
	// module proxy, before it is switched off for the rest.
	run(t, filepath.Join(repo, "sdk", "go"), os.Environ(), runtimes.GoTool(), "mod", "download")
	bin := filepath.Join(root, "bin", "polyfn")
	env := systemEnv("GOPROXY=off")

	out := run(t, "/", env, bin, "version")
	version := strings.TrimPrefix(strings.TrimSuffix(filepath.Base(root), "-linux-amd64"), "polyfn-")
	for _, want := range []string{
		"polyfn " + version + " (commit ",
		"layout: installed (" + root + ")",
		"python3: polyfn-runtime 0.1.0, Python 3",
		filepath.Join(root, "lib/polyfn/python/bin/python"),
		"node: polyfn-runtime 0.1.0, Node.js v",
		"SDK at " + filepath.Join(root, "lib/polyfn/go/sdk"),
	} {
		if !strings.Contains(out, want) {
			t.Errorf("polyfn version lacks %q:\n%s", want, out)
		}
	}
	if !regexp.MustCompile(`\(commit [0-9a-f]{40},`).MatchString(out) {
		t.Errorf("polyfn version names no commit:\n%s", out)
	}

	base := serveEnv(t, bin, filepath.Join(root, "examples", "polyfn.yaml"), env)
	for _, fn := range []string{"sayhi", "hello-node", "hello-go"} {
		status, body, err := post(base, fn, `{"name":"polyfn"}`)
		if err != nil || status != 200 || !strings.Contains(body, "Hello, polyfn!") {
			t.Errorf("%s: got %d %s (%v)", fn, status, body, err)
		}
	}
}

// The arm64 release archive's binary is an arm64 executable, statically
// linked (no program interpreter: built with CGO_ENABLED=0), whose build
// information says so; `file` agrees when it is installed.
func TestReleaseArchiveARM64(t *testing.T) {
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	archive := distArchive(t, repo, "arm64")
	bin := filepath.Join(t.TempDir(), "polyfn")
	if err := extractFile(archive, "bin/polyfn", bin); err != nil {
		t.Fatal(err)
	}
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Machine != elf.EM_AARCH64 || f.Class != elf.ELFCLASS64 {
		t.Errorf("bin/polyfn is for %v %v, want EM_AARCH64 ELFCLASS64", f.Machine, f.Class)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("bin/polyfn has a program interpreter: it is linked dynamically (built with cgo)")
		}
	}
	out := run(t, repo, os.Environ(), runtimes.GoTool(), "version", "-m", bin)
	for _, want := range []string{"\tbuild\tGOARCH=arm64\n", "\tbuild\tCGO_ENABLED=0\n", "\tpath\tgithub.com/polyfn/polyfn/cmd/polyfn\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("go version -m lacks %q:\n%s", want, out)
		}
	}
	if _, err := exec.LookPath("file"); err == nil {
		out := run(t, repo, os.Environ(), "file", bin)
		for _, want := range []string{"ELF 64-bit", "ARM aarch64", "statically linked"} {
			if !strings.Contains(out, want) {
				t.Errorf("file lacks %q: %s", want, out)
			}
		}
	}
}

// extractFile copies the member of the gzip-compressed tar archive whose
// path, below the archive's top directory, is name to dst.
func extractFile(archive, name, dst string) error {
	f, err := os.Open(archive)
	if err != nil {
		return err
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return err
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return errors.New(archive + " has no " + name)
		}
		if err != nil {
			return err
		}
		if _, rest, ok := strings.Cut(h.Name, "/"); !ok || rest != name {
			continue
		}
		out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
		if err != nil {
			return err
		}
		if _, err := io.Copy(out, tr); err != nil {
			out.Close()
			return err
		}
		return out.Close()
	}
}
