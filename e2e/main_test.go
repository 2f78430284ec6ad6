package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// binDir holds what the run builds once for all its tests: bin/polyfn.
var binDir string

func TestMain(m *testing.M) {
	d, err := os.MkdirTemp("", "polyfn-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	// Workers run as users of their own (isolation.user auto): the binary
	// must be theirs to reach, as t.TempDir's are made by Reachable.
	if err := os.Chmod(d, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	binDir = d
	// The binary is not in the checkout's bin/: it finds the checkout's
	// runtimes and Go SDK through POLYFN_HOME, as the checkout's would.
	if root, err := filepath.Abs(".."); err == nil {
		os.Setenv("POLYFN_HOME", root)
	}
	code := m.Run()
	_ = os.RemoveAll(d)
	os.Exit(code)
}

var polyfnBuild struct {
	once sync.Once
	bin  string
	err  error
}

// buildPolyfn returns the real binary, built by the first test that asks
// for it and shared by the rest of the run.
func buildPolyfn(t *testing.T) string {
	t.Helper()
	b := &polyfnBuild
	b.once.Do(func() {
		bin := filepath.Join(binDir, "polyfn")
		if out, err := exec.Command("go", "build", "-o", bin, "../cmd/polyfn").CombinedOutput(); err != nil {
			b.err = fmt.Errorf("build: %w\n%s", err, out)
			return
		}
		b.bin = bin
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.bin
}
