package build

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/polyfn/polyfn/internal/config"
)

// A failed build is reported by Check once per function, naming the
// function once: "function bad: build failed: ...", not "function bad:
// function bad: build failed: ...".
func TestCheckFailedBuildNamesFunctionOnce(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "bad"), 0o755); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "polyfn.yaml")
	cfg, err := config.Parse(file, []byte("functions:\n  - {name: bad, runtime: python3, handler: main.handler, codedir: bad}\n"))
	if err != nil {
		t.Fatal(err)
	}
	failed := &Error{Function: "bad", Command: "pip install -r requirements.txt", Output: "ERROR: No matching distribution found for nope"}
	results := map[string]Result{"bad": {Function: "bad", Kind: KindPython, Err: failed}}
	problems := Check(context.Background(), cfg, results, 0)
	if len(problems) != 1 {
		t.Fatalf("got %d problems, want 1: %v", len(problems), problems)
	}
	want := "function bad: build failed: pip install -r requirements.txt\nERROR: No matching distribution found for nope"
	if got := problems[0].String(); got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}
