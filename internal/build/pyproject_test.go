package build

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// Reading pyproject.toml's dependencies runs none of the function's code:
// a tomllib.py in the codedir does not stand in for the standard library's.
func TestPyprojectReadRunsNoFunctionCode(t *testing.T) {
	dir := t.TempDir()
	ran := filepath.Join(dir, "ran")
	write(t, filepath.Join(dir, "py", "pyproject.toml"), "[project]\nname = \"fn\"\nversion = \"1.0\"\ndependencies = []\n")
	write(t, filepath.Join(dir, "py", "tomllib.py"), "open("+pyQuote(ran)+", 'w').write('function code ran at build time')\n")
	cfg := load(t, dir, `
state_dir: state
functions:
  - {name: py, runtime: python3, handler: main.handler, codedir: py}
`)
	b := New(Options{Dir: Dir(cfg)})
	for _, r := range b.Run(context.Background(), Plan(cfg)) {
		if r.Err != nil {
			t.Errorf("%s: %v", r.Function, r.Err)
		}
	}
	if b, err := os.ReadFile(ran); err == nil {
		t.Fatalf("the codedir's tomllib.py was imported: %s", b)
	}
}

// pyQuote quotes s as a Python string literal.
func pyQuote(s string) string {
	q := "'"
	for _, r := range s {
		if r == '\'' || r == '\\' {
			q += "\\"
		}
		q += string(r)
	}
	return q + "'"
}
