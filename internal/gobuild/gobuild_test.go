package gobuild

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func writeModule(t *testing.T, dir, main string) {
	t.Helper()
	for name, text := range map[string]string{
		"go.mod":  "module example.com/fn\n\ngo 1.22\n",
		"main.go": main,
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestBuildCachesBySource(t *testing.T) {
	src := t.TempDir()
	writeModule(t, src, "package main\n\nimport \"fmt\"\n\nfunc main() { fmt.Print(\"one\") }\n")
	b := New(t.TempDir())
	ctx := context.Background()
	bin1, err := b.Build(ctx, src)
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin1).Output(); err != nil || string(out) != "one" {
		t.Fatalf("built binary printed %q, %v", out, err)
	}
	st1, _ := os.Stat(bin1)
	time.Sleep(10 * time.Millisecond)
	bin2, err := b.Build(ctx, src)
	if err != nil || bin2 != bin1 {
		t.Fatalf("unchanged source: got %s, %v; want the cached %s", bin2, err, bin1)
	}
	if st2, _ := os.Stat(bin2); !st2.ModTime().Equal(st1.ModTime()) {
		t.Fatal("unchanged source was rebuilt")
	}
	writeModule(t, src, "package main\n\nimport \"fmt\"\n\nfunc main() { fmt.Print(\"two\") }\n")
	bin3, err := b.Build(ctx, src)
	if err != nil || bin3 == bin1 {
		t.Fatalf("changed source: got %s, %v; want a new binary", bin3, err)
	}
	if out, _ := exec.Command(bin3).Output(); string(out) != "two" {
		t.Fatalf("rebuilt binary printed %q", out)
	}
}

func TestCompileErrorIsReported(t *testing.T) {
	src := t.TempDir()
	writeModule(t, src, "package main\n\nfunc main() { undefinedThing() }\n")
	_, err := New(t.TempDir()).Build(context.Background(), src)
	var ce *CompileError
	if !errors.As(err, &ce) || !strings.Contains(ce.Output, "undefined: undefinedThing") || !strings.Contains(err.Error(), "main.go:3") {
		t.Fatalf("got %v, want a compile error naming the file, line and problem", err)
	}
}

// A package the function imports from outside codedir (another package of
// its module, as polyfn's own SDK is for the functions in this repository)
// is part of the key: editing it rebuilds the function.
func TestLocalDependencyChangeRebuilds(t *testing.T) {
	mod := t.TempDir()
	write := func(rel, text string) {
		t.Helper()
		p := filepath.Join(mod, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("go.mod", "module example.com/app\n\ngo 1.21\n")
	write("greet/greet.go", "package greet\n\nfunc Word() string { return \"one\" }\n")
	write("fn/main.go", "package main\n\nimport (\n\t\"fmt\"\n\n\t\"example.com/app/greet\"\n)\n\nfunc main() { fmt.Print(greet.Word()) }\n")
	b := New(t.TempDir())
	ctx := context.Background()
	fn := filepath.Join(mod, "fn")
	bin1, err := b.Build(ctx, fn)
	if err != nil {
		t.Fatal(err)
	}
	if out, _ := exec.Command(bin1).Output(); string(out) != "one" {
		t.Fatalf("built binary printed %q", out)
	}
	if again, err := New(b.Dir).Build(ctx, fn); err != nil || again != bin1 {
		t.Fatalf("unchanged source, new builder: got %s, %v; want the cached %s", again, err, bin1)
	}
	write("greet/greet.go", "package greet\n\nfunc Word() string { return \"two\" }\n")
	bin2, err := New(b.Dir).Build(ctx, fn)
	if err != nil {
		t.Fatal(err)
	}
	if out, _ := exec.Command(bin2).Output(); bin2 == bin1 || string(out) != "two" {
		t.Fatalf("after editing the imported package: %s printed %q; want a rebuilt binary printing two", bin2, out)
	}
}
