//go:build linux

package peer

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// helperEnv makes the test binary a helper process: "listen tcp ADDR",
// "listen-reuseport tcp ADDR" or "listen unix PATH" listens, prints
// "ready", accepts connections and holds them; "spawn MODE..." starts a
// child helper with the rest and waits.
const helperEnv = "POLYFN_PEER_HELPER"

func TestMain(m *testing.M) {
	if h := os.Getenv(helperEnv); h != "" {
		runHelper(strings.Fields(h))
		return
	}
	os.Exit(m.Run())
}

func runHelper(args []string) {
	switch args[0] {
	case "spawn":
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), helperEnv+"="+strings.Join(args[1:], " "))
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		_ = cmd.Run()
		os.Exit(0)
	case "listen", "listen-reuseport":
		lc := net.ListenConfig{}
		if args[0] == "listen-reuseport" {
			lc.Control = reusePort
		}
		l, err := lc.Listen(context.Background(), args[1], args[2])
		if err != nil {
			fmt.Println("listen:", err)
			os.Exit(2)
		}
		fmt.Println("ready")
		var held []net.Conn
		for {
			c, err := l.Accept()
			if err != nil {
				os.Exit(3)
			}
			held = append(held, c)
		}
	}
	os.Exit(1)
}

func reusePort(network, address string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, 0xf /* SO_REUSEPORT */, 1)
	})
	if err != nil {
		return err
	}
	return serr
}

// startHelper starts the test binary as a helper and waits for it to print
// "ready" (or "connected"); it returns the process id.
func startHelper(t *testing.T, args ...string) int {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), helperEnv+"="+strings.Join(args, " "))
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
	if line, _ := bufio.NewReader(out).ReadString('\n'); line != "ready\n" {
		t.Fatalf("helper %v: %q", args, line)
	}
	return cmd.Process.Pid
}

// sleeper starts a process that is nobody's worker.
func sleeper(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return cmd.Process.Pid
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func addrs(t *testing.T, c net.Conn) (local, remote netip.AddrPort) {
	t.Helper()
	return netip.MustParseAddrPort(c.LocalAddr().String()), netip.MustParseAddrPort(c.RemoteAddr().String())
}

func wantRefusal(t *testing.T, err error, reason string, pid int) {
	t.Helper()
	defer refillOffenderLookups()
	var r *Refusal
	if !errors.As(err, &r) {
		t.Fatalf("got %v, want a refusal", err)
	}
	if r.Reason != reason || r.Pid != pid || (reason == ReasonNotWorker && r.UID != os.Getuid()) {
		t.Fatalf("refusal %+v (%v), want reason %s, pid %d, uid %d", r, r, reason, pid, os.Getuid())
	}
}

func TestTCPClient(t *testing.T) {
	refillOffenderLookups()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	// A worker that connects itself, and one whose child connects.
	for _, tc := range []struct {
		name  string
		shell string
		child bool
	}{
		{"the worker", "exec 3<>/dev/tcp/127.0.0.1/%d; echo ready; exec sleep 60", false},
		{"a descendant of the worker", "(exec 3<>/dev/tcp/127.0.0.1/%d; echo ready; exec sleep 60); sleep 60", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command("bash", "-c", fmt.Sprintf(tc.shell, port))
			cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
			out, _ := cmd.StdoutPipe()
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); _ = cmd.Wait() }()
			c, err := l.Accept()
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if line, _ := bufio.NewReader(out).ReadString('\n'); line != "ready\n" {
				t.Fatalf("child: %q", line)
			}
			local, remote := addrs(t, c)
			worker := cmd.Process.Pid
			p, err := TCPClient(worker, remote, local)
			if err != nil {
				t.Fatalf("TCPClient: %v", err)
			}
			if (p.Pid == worker) == tc.child || p.UID != os.Getuid() {
				t.Fatalf("found %+v, worker %d", p, worker)
			}
			if !Descends(p.Pid, worker) {
				t.Fatalf("pid %d does not descend from worker %d", p.Pid, worker)
			}
			// The same connection checked against another worker is refused,
			// and the offender named.
			_, err = TCPClient(sleeper(t), remote, local)
			wantRefusal(t, err, ReasonNotWorker, p.Pid)
		})
	}
	t.Run("the host itself", func(t *testing.T) {
		d, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		c, err := l.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		local, remote := addrs(t, c)
		// The host's own sockets are not looked for in its offender scan:
		// the pid is unknown, the uid is the host's.
		_, err = TCPClient(sleeper(t), remote, local)
		wantRefusal(t, err, ReasonNotWorker, 0)
	})
	t.Run("no such socket", func(t *testing.T) {
		_, err := TCPClient(os.Getpid(), netip.MustParseAddrPort("192.0.2.7:40000"), netip.MustParseAddrPort(l.Addr().String()))
		wantRefusal(t, err, ReasonUnidentified, 0)
	})
}

func TestTCPServer(t *testing.T) {
	refillOffenderLookups()
	dial := func(t *testing.T, addr string) (client, server netip.AddrPort) {
		t.Helper()
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return addrs(t, c)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	t.Run("the worker listens and accepts", func(t *testing.T) {
		addr := freePort(t)
		worker := startHelper(t, "listen", "tcp", addr)
		client, server := dial(t, addr)
		p, err := TCPServer(ctx, worker, client, server)
		if err != nil || p.Pid != worker {
			t.Fatalf("got %+v, %v; want pid %d", p, err, worker)
		}
	})
	t.Run("a descendant of the worker listens", func(t *testing.T) {
		addr := freePort(t)
		worker := startHelper(t, "spawn", "listen", "tcp", addr)
		client, server := dial(t, addr)
		p, err := TCPServer(ctx, worker, client, server)
		if err != nil || p.Pid == worker || !Descends(p.Pid, worker) {
			t.Fatalf("got %+v, %v; want a child of %d", p, err, worker)
		}
	})
	t.Run("another process holds the port", func(t *testing.T) {
		addr := freePort(t)
		other := startHelper(t, "listen", "tcp", addr)
		client, server := dial(t, addr)
		_, err := TCPServer(ctx, sleeper(t), client, server)
		wantRefusal(t, err, ReasonNotWorker, other)
	})
	t.Run("another process shares the port", func(t *testing.T) {
		addr := freePort(t)
		worker := startHelper(t, "listen-reuseport", "tcp", addr)
		other := startHelper(t, "listen-reuseport", "tcp", addr)
		// Whichever listener the connection lands on, the other one is
		// there: refused, naming the intruder.
		for range 4 {
			client, server := dial(t, addr)
			_, err := TCPServer(ctx, worker, client, server)
			wantRefusal(t, err, ReasonNotWorker, other)
		}
	})
	t.Run("a listener on the unspecified address", func(t *testing.T) {
		addr := freePort(t)
		port := netip.MustParseAddrPort(addr).Port()
		worker := startHelper(t, "listen-reuseport", "tcp", addr)
		other := startHelper(t, "listen-reuseport", "tcp", fmt.Sprintf("0.0.0.0:%d", port))
		client, server := dial(t, addr)
		_, err := TCPServer(ctx, worker, client, server)
		wantRefusal(t, err, ReasonNotWorker, other)
	})
	t.Run("not accepted", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0") // never accepts
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		client, server := dial(t, l.Addr().String())
		short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		defer cancel()
		_, err = TCPServer(short, os.Getpid(), client, server)
		var r *Refusal
		if err == nil || errors.As(err, &r) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("got %v, want a plain error for a connection not accepted", err)
		}
	})
}

func TestUnixServer(t *testing.T) {
	path := t.TempDir() + "/worker.sock"
	worker := startHelper(t, "listen", "unix", path)
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	p, err := UnixServer(worker, c.(*net.UnixConn))
	if err != nil || p.Pid != worker || p.UID != os.Getuid() {
		t.Fatalf("got %+v, %v; want pid %d", p, err, worker)
	}
	_, err = UnixServer(sleeper(t), c.(*net.UnixConn))
	wantRefusal(t, err, ReasonNotWorker, worker)
}

func TestDescends(t *testing.T) {
	self := os.Getpid()
	s := sleeper(t)
	for _, tc := range []struct {
		pid, root int
		want      bool
	}{
		{self, self, true},
		{s, self, true},
		{self, s, false},
		{s, os.Getppid(), true},
		{1, self, false},
		{99999999, self, false},
	} {
		if got := Descends(tc.pid, tc.root); got != tc.want {
			t.Errorf("Descends(%d, %d) = %v, want %v", tc.pid, tc.root, got, tc.want)
		}
	}
	if got := descendantsByScan(self); !contains(got, s) {
		t.Errorf("descendantsByScan(%d) = %v, want %d among them", self, got, s)
	}
	if got := descendants(self); !contains(got, s) {
		t.Errorf("descendants(%d) = %v, want %d among them", self, got, s)
	}
}

func contains(pids []int, pid int) bool {
	for _, p := range pids {
		if p == pid {
			return true
		}
	}
	return false
}

// refillOffenderLookups lets the next refusals look their offender up
// whatever the rate limit spent before.
func refillOffenderLookups() {
	offenderBucket.Lock()
	offenderBucket.tokens = OffenderLookupBurst
	offenderBucket.Unlock()
}

// BenchmarkTCPClient measures what the stream server's check costs per
// accepted stream: the client socket found in /proc/net/tcp and in the file
// descriptors of the worker (a child process here).
func BenchmarkTCPClient(b *testing.B) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	cmd := exec.Command("bash", "-c", fmt.Sprintf("exec 3<>/dev/tcp/127.0.0.1/%d; exec sleep 60", l.Addr().(*net.TCPAddr).Port))
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	c, err := l.Accept()
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	local, remote := netip.MustParseAddrPort(c.LocalAddr().String()), netip.MustParseAddrPort(c.RemoteAddr().String())
	b.ResetTimer()
	for range b.N {
		if _, err := TCPClient(cmd.Process.Pid, remote, local); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkTCPServer measures the call dialer's check per connection: the
// accepted socket and the listeners on the worker's port.
func BenchmarkTCPServer(b *testing.B) {
	l, err := net.Listen("tcp", "127.0.0.1:0") // the "worker" is this process
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	s, err := l.Accept()
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	client, server := netip.MustParseAddrPort(c.LocalAddr().String()), netip.MustParseAddrPort(c.RemoteAddr().String())
	b.ResetTimer()
	for range b.N {
		if _, err := TCPServer(context.Background(), os.Getpid(), client, server); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkOffenderLookup measures the scan of every process's file
// descriptors that names the process behind a refused connection.
func BenchmarkOffenderLookup(b *testing.B) {
	for range b.N {
		refillOffenderLookups()
		_ = offender(1)
	}
}

// TestSockDiagAgreesWithProc checks the two ways sockets are found — the
// kernel's sock_diag and /proc/net/tcp{,6}, its fallback — against each
// other, for IPv4 and IPv6 connections and listeners.
func TestSockDiagAgreesWithProc(t *testing.T) {
	if !diagAvailable() {
		t.Skip("no sock_diag here: only /proc/net/tcp is used")
	}
	for _, network := range []string{"tcp4", "tcp6"} {
		l, err := net.Listen(network, map[string]string{"tcp4": "127.0.0.1:0", "tcp6": "[::1]:0"}[network])
		if err != nil {
			t.Logf("%s: %v", network, err)
			continue
		}
		defer l.Close()
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		s, err := l.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		client, server := addrs(t, c)
		u1, n1, f1, err1 := lookupSocketProc(client, server)
		d, f2, err2 := diagLookup(client, server)
		if err1 != nil || err2 != nil || !f1 || !f2 || u1 != d.uid || n1 != d.inode || n1 == 0 {
			t.Errorf("%s client socket: /proc %d %d %v %v, sock_diag %+v %v %v", network, u1, n1, f1, err1, d, f2, err2)
		}
		if _, f, err := diagLookup(netip.MustParseAddrPort(server.String()), netip.AddrPortFrom(client.Addr(), client.Port()+1)); f || err != nil {
			t.Errorf("%s: sock_diag found a connection that does not exist: %v", network, err)
		}
		port := netip.MustParseAddrPort(l.Addr().String()).Port()
		fromDiag, err := diagListeners(port)
		if err != nil {
			t.Fatal(err)
		}
		all, err := listenersProc()
		if err != nil {
			t.Fatal(err)
		}
		var fromProc []tcpEntry
		for _, e := range all {
			if e.local.Port() == port {
				fromProc = append(fromProc, e)
			}
		}
		if len(fromDiag) != 1 || len(fromProc) != 1 || fromDiag[0].inode != fromProc[0].inode || fromDiag[0].local != fromProc[0].local {
			t.Errorf("%s listeners on %d: sock_diag %+v, /proc %+v", network, port, fromDiag, fromProc)
		}
	}
}
