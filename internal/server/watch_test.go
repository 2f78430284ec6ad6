package server

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/polyfn/polyfn/internal/config"
	"github.com/polyfn/polyfn/internal/host"
)

// serve --watch compares fingerprints of the watched files; with several
// functions, each in its own directory, the fingerprint of unchanged files
// must not change, or every look (twice a second) reloads the config.
// It must change when a file under a code directory does.
func TestFingerprintIsStable(t *testing.T) {
	dir := t.TempDir()
	var fns strings.Builder
	for i := range 6 {
		code := filepath.Join(dir, fmt.Sprintf("fn%d", i))
		if err := os.Mkdir(code, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(code, "main.py"), []byte("def h(e, c): return e\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&fns, "  - {name: f%d, runtime: fake, handler: main.h, codedir: fn%d}\n", i, i)
	}
	file := filepath.Join(dir, "polyfn.yaml")
	text := "isolation: {user: host}\nruntimes:\n  fake: {protocol: call, command: [/bin/false]}\nfunctions:\n" + fns.String()
	if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(file)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	h, err := host.New(cfg, log) // not started: no worker runs
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		h.Close(ctx)
	})
	s := &Server{o: Options{File: file, Log: log}, log: log}
	s.current.Store(&generation{cfg: cfg, h: h})

	first := s.fingerprint()
	for i := range 6 {
		if p := filepath.Join(dir, fmt.Sprintf("fn%d", i), "main.py"); !strings.Contains(first, p) {
			t.Fatalf("the fingerprint does not cover %s:\n%s", p, first)
		}
	}
	for i := range 50 {
		if fp := s.fingerprint(); fp != first {
			t.Fatalf("look %d: the fingerprint of unchanged files changed:\n%s\nthen\n%s", i+1, first, fp)
		}
	}
	// A change under a code directory changes it.
	if err := os.WriteFile(filepath.Join(dir, "fn3", "util.py"), []byte("x = 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if s.fingerprint() == first {
		t.Error("a new file under a code directory left the fingerprint unchanged")
	}
}
