package host_test

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/polyfn/polyfn/internal/config"
	"github.com/polyfn/polyfn/internal/host"
	"github.com/polyfn/polyfn/internal/hosttest"
)

// childHostEnv makes the test binary a host that prints its run directory
// and waits to be killed.
const childHostEnv = "POLYFN_TEST_CHILD_HOST"

const childHostConfig = `
runtimes:
  fake:
    protocol: call
    command: ["/bin/true"]
functions:
  - {name: f, runtime: fake, handler: h.h, codedir: /}
`

func runChildHost() {
	cfg, err := config.Parse("/polyfn.yaml", []byte(childHostConfig))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	h, err := host.New(cfg, slog.New(slog.NewTextHandler(os.Stderr, nil)))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	fmt.Println(h.RunDir())
	_, _ = io.Copy(io.Discard, os.Stdin) // until the test closes it, or kills us
	os.Exit(0)
}

// startChildHost starts a host in a process of its own and returns the
// process and the host's run directory.
func startChildHost(t *testing.T) (*exec.Cmd, string) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), childHostEnv+"=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("child host: %v", err)
	}
	return cmd, strings.TrimSpace(line)
}

// A host killed with SIGKILL cannot remove its run directory: the next host
// to start does, and removes nothing else — not a live host's, not a
// directory that is not provably a host's.
func TestStaleRunDirectoryOfAKilledHostIsRemoved(t *testing.T) {
	tmp := t.TempDir()
	hosttest.Reachable(t, tmp) // and the test's other directories: workers run as users of their own
	t.Setenv("TMPDIR", tmp)    // the children's run directories, and ours, go there
	killed, killedDir := startChildHost(t)
	_, liveDir := startChildHost(t)
	if !strings.HasPrefix(killedDir, tmp+"/polyfn-") || !strings.HasPrefix(liveDir, tmp+"/polyfn-") {
		t.Fatalf("run directories %s and %s are not under TMPDIR %s", killedDir, liveDir, tmp)
	}
	// An instance directory in it, as a worker would have left.
	if err := os.MkdirAll(filepath.Join(killedDir, "f-1", "deep"), 0o700); err != nil {
		t.Fatal(err)
	}

	// Look-alikes that are not provably a gone host's.
	foreign := filepath.Join(tmp, "polyfn-foreign")
	if err := os.MkdirAll(filepath.Join(foreign, "data"), 0o700); err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(t.TempDir(), "elsewhere")
	if err := os.MkdirAll(target, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(target, "host.lock"), []byte("1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, filepath.Join(tmp, "polyfn-link")); err != nil {
		t.Fatal(err)
	}

	if err := killed.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = killed.Wait()
	if _, err := os.Stat(killedDir); err != nil {
		t.Fatalf("the killed host's run directory should still be there: %v", err)
	}

	th := startHost(t, poolConfig)
	if _, err := os.Stat(killedDir); !os.IsNotExist(err) {
		t.Errorf("the killed host's run directory %s is still there: %v", killedDir, err)
	}
	if !strings.Contains(th.Logs.String(), fmt.Sprintf(`msg="removed the run directory of a host that is gone" dir=%s pid=%d`, killedDir, killed.Process.Pid)) {
		t.Errorf("no log record of the removal naming the directory and the dead host's pid")
	}
	for _, keep := range []string{liveDir, filepath.Join(liveDir, "host.lock"), filepath.Join(foreign, "data"), filepath.Join(target, "host.lock"), filepath.Join(tmp, "polyfn-link")} {
		if _, err := os.Lstat(keep); err != nil {
			t.Errorf("%s was removed: %v", keep, err)
		}
	}
	if !strings.HasPrefix(th.RunDir(), tmp+"/polyfn-") {
		t.Errorf("this host's run directory %s is not under TMPDIR", th.RunDir())
	}
}
