package build

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/polyfn/polyfn/internal/config"
)

func write(t testing.TB, path, text string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

func load(t testing.TB, dir, text string) *config.Config {
	t.Helper()
	cfg, err := config.Parse(filepath.Join(dir, "polyfn.yaml"), []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// Plan picks the functions that declare dependencies; a package.json that
// is not JSON fails its function's build without running anything.
func TestPlan(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "nodeps", "package.json"), `{"type": "module"}`)
	write(t, filepath.Join(dir, "own", "package.json"), `{"dependencies": {"x": "1"}}`)
	if err := os.Mkdir(filepath.Join(dir, "own", "node_modules"), 0o755); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(dir, "broken", "package.json"), `{"dependencies": {`)
	write(t, filepath.Join(dir, "py", "requirements.txt"), "six\n")
	write(t, filepath.Join(dir, "plain", "main.py"), "")
	cfg := load(t, dir, `
state_dir: state
functions:
  - {name: nodeps, runtime: node, handler: a.h, codedir: nodeps}
  - {name: own, runtime: node, handler: a.h, codedir: own}
  - {name: broken, runtime: node, handler: a.h, codedir: broken}
  - {name: py, runtime: python3, handler: a.h, codedir: py}
  - {name: plain, runtime: python3, handler: a.h, codedir: plain}
`)
	specs := Plan(cfg)
	var names []string
	for _, s := range specs {
		names = append(names, s.Function+":"+string(s.Kind))
	}
	if got := strings.Join(names, " "); got != "broken:node py:python" {
		t.Fatalf("plan: %s; want broken:node py:python", got)
	}
	b := New(Options{Dir: Dir(cfg)})
	r := b.Run(context.Background(), specs[:1])[0]
	var be *Error
	if !errors.As(r.Err, &be) || be.Function != "broken" || !strings.Contains(be.Error(), "package.json is not valid JSON") {
		t.Fatalf("broken package.json: %v", r.Err)
	}
	if b.Installs() != 0 {
		t.Fatalf("%d installers ran for a package.json that is not JSON", b.Installs())
	}
}

func TestConflicts(t *testing.T) {
	cons := []string{"grpcio==1.85.1", "protobuf==7.36.2", "pyyaml==6.0.3"}
	if got := conflicts("requests\nProtobuf<4\n# grpcio\n", cons); got != "protobuf==7.36.2" {
		t.Fatalf("conflicts: %q", got)
	}
	if got := conflicts("protobuf-extras\n", cons); got != "" {
		t.Fatalf("conflicts of another package: %q", got)
	}
}

// BenchmarkUnchanged is what an unchanged Python, Node.js and Go function
// with dependencies add to a start: planning and finding both builds in the
// cache, as a new process does (nothing remembered in memory).
func BenchmarkUnchanged(b *testing.B) {
	dir := b.TempDir()
	write(b, filepath.Join(dir, "py", "requirements.txt"), "six==1.16.0\n")
	write(b, filepath.Join(dir, "nd", "package.json"), `{"dependencies": {"is-odd": "3.0.1"}}`)
	write(b, filepath.Join(dir, "gofn", "go.mod"), "module example.com/gofn\n\ngo 1.22\n")
	write(b, filepath.Join(dir, "gofn", "main.go"), "package main\n\nfunc main() {}\n")
	cfg := load(b, dir, `
state_dir: state
functions:
  - {name: py, runtime: python3, handler: a.h, codedir: py}
  - {name: nd, runtime: node, handler: a.h, codedir: nd}
  - {name: gofn, runtime: go, codedir: gofn}
`)
	for _, r := range New(Options{Dir: Dir(cfg)}).Run(context.Background(), Plan(cfg)) {
		if r.Err != nil {
			b.Fatal(r.Err)
		}
	}
	for b.Loop() {
		probes.Lock()
		clear(probes.m)
		probes.Unlock()
		nodeVersions.Lock()
		clear(nodeVersions.m)
		nodeVersions.Unlock()
		bl := New(Options{Dir: Dir(cfg)})
		for _, r := range bl.Run(context.Background(), Plan(cfg)) {
			if r.Err != nil || !r.Cached {
				b.Fatalf("%+v", r)
			}
		}
	}
}
