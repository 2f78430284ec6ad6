package host_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/polyfn/polyfn/internal/config"
	"github.com/polyfn/polyfn/internal/host"
	"github.com/polyfn/polyfn/internal/hosttest"
)

// By default a host running as root runs every instance as a user id of
// its own: the worker cannot read the host's environment, the machine's
// secrets or another instance's directory, has a home of its own, and what
// it starts dies with it even when it left its process group.
func TestWorkersRunAsUsersOfTheirOwnByDefault(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("users of their own need a host running as root")
	}
	bin := hosttest.Self(t)
	th := hosttest.Start(t, t.TempDir(), `
runtimes:
  fake:
    protocol: call
    command: ["{bin}"]
    env: {POLYFN_FAKE_WORKER: ok}
functions:
  - {name: a, runtime: fake, handler: h.h, codedir: "{codedir}"}
  - {name: b, runtime: fake, handler: h.h, codedir: "{codedir}"}
`, "{bin}", bin, "{codedir}", t.TempDir())

	if r := th.Call(t, "b", "ping"); r.Status != 200 {
		t.Fatalf("b: %d %s", r.Status, r.Body)
	}
	bDir := filepath.Join(th.RunDir(), th.Status()[indexOf(th, "b")].Instances[0].ID)
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("s3cret"), 0o600); err != nil {
		t.Fatal(err)
	}
	for what, path := range map[string]string{
		"the host's environment":       fmt.Sprintf("/proc/%d/environ", os.Getpid()),
		"/etc/shadow":                  "/etc/shadow",
		"another instance's directory": bDir,
		"a file of the host's user":    secret,
	} {
		r := th.Call(t, "a", "read:"+path)
		if r.Status != 200 || !strings.Contains(string(r.Body), "permission denied") {
			t.Errorf("reading %s (%s): got %d %q, want permission denied", what, path, r.Status, r.Body)
		}
	}
	aDir := filepath.Join(th.RunDir(), th.Status()[indexOf(th, "a")].Instances[0].ID)
	if r := th.Call(t, "a", "read:"+aDir); string(r.Body) != "read" {
		t.Errorf("a cannot read its own directory: %q", r.Body)
	}
	if r := th.Call(t, "a", "env:HOME"); string(r.Body) != aDir {
		t.Errorf("HOME = %q, want the instance's directory %s", r.Body, aDir)
	}
	if !strings.Contains(th.Logs.String(), `msg="workers run as users of their own"`) {
		t.Errorf("the host does not say which users workers run as")
	}

	r := th.Call(t, "a", "escape")
	pid, err := strconv.Atoi(string(r.Body))
	if err != nil {
		t.Fatalf("escape: %d %q", r.Status, r.Body)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(fmt.Sprintf("/proc/%d", pid), &st); err != nil || st.Uid == 0 {
		t.Fatalf("the escaped process %d: %v, uid %d", pid, err, st.Uid)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	th.Close(ctx)
	hosttest.WaitFor(t, 5*time.Second, "the process that left the worker's process group to be killed", func() bool {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		return err != nil || strings.Contains(string(b), ") Z ")
	})
}

// A runtime the workers' users cannot reach (under a private home
// directory) stops the host at start with what to change, instead of
// failing every invocation.
func TestUnreachableRuntimeIsReportedAtStart(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("users of their own need a host running as root")
	}
	private := t.TempDir() // 0700, like /root
	bin := filepath.Join(private, "python3")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	codedir := t.TempDir()
	hosttest.Reachable(t, codedir)
	if err := os.Chmod(private, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, extra, want string
	}{
		{"auto", "", "cannot run runtime private's program " + bin + ": " + private + " is mode 0700"},
		{"root", ", user: root", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := config.Parse(filepath.Join(codedir, "polyfn.yaml"), []byte(fmt.Sprintf(`
runtimes:
  private: {protocol: call, command: [%q]}
functions:
  - {name: f, runtime: private, handler: h.h, codedir: %q%s}
`, bin, codedir, tc.extra)))
			if err != nil {
				t.Fatal(err)
			}
			h, err := host.New(cfg, slog.New(slog.DiscardHandler))
			if tc.want == "" {
				if err != nil {
					t.Fatalf("user: root: %v", err)
				}
				h.Close(context.Background())
				return
			}
			if err == nil {
				h.Close(context.Background())
				t.Fatal("the host started")
			}
			for _, want := range []string{"functions[0] (f)", tc.want, "chmod o+x", "user: root"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q lacks %q", err, want)
				}
			}
		})
	}
}
