//go:build linux

package peer

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"syscall"
	"testing"
)

// connectChild starts a shell in dir that connects to addr and stays; it
// returns the server side of the connection.
func connectChild(t *testing.T, l net.Listener, dir string) net.Conn {
	t.Helper()
	port := l.Addr().(*net.TCPAddr).Port
	cmd := exec.Command("bash", "-c", fmt.Sprintf("exec 3<>/dev/tcp/127.0.0.1/%d; echo connected; exec sleep 60", port))
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Wait()
	})
	c, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if line, _ := bufio.NewReader(out).ReadString('\n'); line != "connected\n" {
		t.Fatalf("child: %q", line)
	}
	return c
}

func TestFromWorker(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	dir := t.TempDir()
	child := connectChild(t, l, dir)
	self := os.Getpid()
	check := func(name string, g Guard, c net.Conn, want bool) {
		t.Helper()
		got, err := g.FromWorker(c.RemoteAddr().String(), c.LocalAddr().String())
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got != want {
			t.Errorf("%s: FromWorker = %v, want %v", name, got, want)
		}
	}
	check("a child of the host", Guard{HostPID: self}, child, true)
	check("a process that is not the host's", Guard{HostPID: -1}, child, false)
	check("a process working under the run directory", Guard{HostPID: -1, RunDir: dir}, child, true)
	check("a process outside the run directory", Guard{HostPID: -1, RunDir: t.TempDir()}, child, false)
	check("a process of a worker user", Guard{HostPID: -1, UIDs: map[int]bool{os.Getuid(): true}}, child, true)

	// The host's own connection to itself is not a worker's.
	go func() {
		c, err := net.Dial("tcp", l.Addr().String())
		if err == nil {
			defer c.Close()
			buf := make([]byte, 1)
			_, _ = c.Read(buf)
		}
	}()
	own, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer own.Close()
	check("the host itself", Guard{HostPID: self, RunDir: dir}, own, false)

	// An address no local socket has is a remote client.
	if got, err := (Guard{HostPID: self}).FromWorker("192.0.2.7:40000", child.LocalAddr().String()); err != nil || got {
		t.Errorf("remote client: got %v, %v", got, err)
	}
}
