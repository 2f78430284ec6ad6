package host_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/polyfn/polyfn/internal/config"
	"github.com/polyfn/polyfn/internal/host"
	"github.com/polyfn/polyfn/internal/hosttest"
	"github.com/polyfn/polyfn/internal/stream"
	"github.com/polyfn/polyfn/internal/testlog"
)

// streamListenConfig serves a Python function through polyfn's Python
// runtime in the stream protocol (its default), with stream.listen set.
const streamListenConfig = `
stream:
  listen: "{listen}"
functions:
  - {name: echo, runtime: python3, handler: echo.handler, codedir: "{codedir}"}
`

func echoDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "echo.py"), []byte("def handler(event, context):\n    return event\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// holdPort listens on a free loopback port until the test ends.
func holdPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.Addr().(*net.TCPAddr).Port
}

func streamPort(t *testing.T, h *hosttest.Host) int {
	t.Helper()
	ap, err := netip.ParseAddrPort(h.StreamAddr())
	if err != nil {
		t.Fatalf("stream address %q: %v", h.StreamAddr(), err)
	}
	if !ap.Addr().IsLoopback() {
		t.Fatalf("stream address %s is not loopback", ap)
	}
	return int(ap.Port())
}

func callEcho(t *testing.T, h *hosttest.Host, body string) {
	t.Helper()
	r := h.Call(t, "echo", body)
	if r.Status != 200 || string(r.Body) != body {
		t.Fatalf("echo: got %d %q, want 200 %q", r.Status, r.Body, body)
	}
}

// A range whose first port is taken: the host listens on a later port of
// the range and the real Python worker dials it.
func TestStreamListenRange(t *testing.T) {
	busy := holdPort(t)
	spec := fmt.Sprintf("127.0.0.1:%d-%d", busy, busy+20)
	h := hosttest.Start(t, t.TempDir(), streamListenConfig, "{listen}", spec, "{codedir}", echoDir(t))
	callEcho(t, h, "ranged")
	if p := streamPort(t, h); p <= busy || p > busy+20 {
		t.Fatalf("stream server on port %d, want one in %d-%d other than the busy %d", p, busy+1, busy+20, busy)
	}
}

// Two hosts of one process with the same fixed address (a reload's new
// configuration while the old one drains) share the server; the second
// keeps serving after the first is closed.
func TestStreamListenFixedSharedAcrossReload(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	spec := fmt.Sprintf("127.0.0.1:%d", port)
	code := echoDir(t)
	old := hosttest.Start(t, t.TempDir(), streamListenConfig, "{listen}", spec, "{codedir}", code)
	callEcho(t, old, "old")
	cur := hosttest.Start(t, t.TempDir(), streamListenConfig, "{listen}", spec, "{codedir}", code)
	callEcho(t, cur, "new")
	if a, b := streamPort(t, old), streamPort(t, cur); a != port || b != port {
		t.Fatalf("stream ports %d and %d, want both %d", a, b, port)
	}
	old.Close(context.Background())
	callEcho(t, cur, "after the old one closed")
}

// A fixed address that is taken is a start-up error naming the key.
func TestStreamListenBusy(t *testing.T) {
	spec := fmt.Sprintf("127.0.0.1:%d", holdPort(t))
	code := echoDir(t)
	hosttest.Reachable(t, code)
	text := strings.NewReplacer("{listen}", spec, "{codedir}", code).Replace(streamListenConfig)
	cfg, err := config.Parse(filepath.Join(t.TempDir(), "polyfn.yaml"), []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	h, err := host.New(cfg, slog.New(slog.NewTextHandler(&testlog.Buffer{}, nil)))
	if err == nil {
		h.Close(context.Background())
		t.Fatal("host.New succeeded on a busy stream.listen")
	}
	if !errors.Is(err, stream.ErrListenBusy) || !strings.Contains(err.Error(), "stream.listen "+spec) {
		t.Fatalf("got %v, want an error naming stream.listen %s and wrapping ErrListenBusy", err, spec)
	}
}
