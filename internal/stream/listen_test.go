package stream

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
)

func hold(t *testing.T, addr string) (net.Listener, int) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln, ln.Addr().(*net.TCPAddr).Port
}

func TestListen(t *testing.T) {
	_, busy := hold(t, "127.0.0.1:0")

	t.Run("default is loopback on a kernel port", func(t *testing.T) {
		ln, err := Listen("")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		a := ln.Addr().(*net.TCPAddr)
		if !a.IP.IsLoopback() || a.Port == 0 {
			t.Fatalf("listens on %s, want 127.0.0.1 on a port of its own", a)
		}
	})
	t.Run("range skips the busy port", func(t *testing.T) {
		ln, err := Listen(fmt.Sprintf("127.0.0.1:%d-%d", busy, busy+20))
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		if p := ln.Addr().(*net.TCPAddr).Port; p <= busy || p > busy+20 {
			t.Fatalf("port %d, want one of %d-%d", p, busy+1, busy+20)
		}
	})
	t.Run("fixed busy port", func(t *testing.T) {
		spec := fmt.Sprintf("127.0.0.1:%d", busy)
		_, err := Listen(spec)
		if !errors.Is(err, ErrListenBusy) || !strings.Contains(err.Error(), "stream.listen "+spec) {
			t.Fatalf("got %v, want ErrListenBusy naming stream.listen %s", err, spec)
		}
	})
	t.Run("whole range busy", func(t *testing.T) {
		spec := fmt.Sprintf("127.0.0.1:%d-%d", busy, busy)
		_, err := Listen(spec)
		if !errors.Is(err, ErrListenBusy) {
			t.Fatalf("got %v, want ErrListenBusy", err)
		}
		_, other := hold(t, "127.0.0.1:0")
		lo, hi := min(busy, other), max(busy, other)
		if hi-lo > 50 {
			t.Skip("the two held ports are too far apart to form a range all taken")
		}
		// Hold every port between them too, where free.
		for p := lo + 1; p < hi; p++ {
			if ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p)); err == nil {
				t.Cleanup(func() { ln.Close() })
			}
		}
		_, err = Listen(fmt.Sprintf("127.0.0.1:%d-%d", lo, hi))
		if !errors.Is(err, ErrListenBusy) || !strings.Contains(err.Error(), fmt.Sprintf("every port from %d to %d is in use", lo, hi)) {
			t.Fatalf("got %v, want every port of the range named busy", err)
		}
	})
}

// A server on every address tells workers to dial loopback.
func TestDialAddrOfUnspecified(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"0.0.0.0:7000", "127.0.0.1:7000"},
		{"[::]:7000", "[::1]:7000"},
		{"127.0.0.1:7000", "127.0.0.1:7000"},
		{"192.0.2.1:7000", "192.0.2.1:7000"},
	} {
		a, err := net.ResolveTCPAddr("tcp", tt.in)
		if err != nil {
			t.Fatal(err)
		}
		if got := dialAddr(a); got != tt.want {
			t.Errorf("dialAddr(%s) = %s, want %s", tt.in, got, tt.want)
		}
	}
}
