package bench

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/polyfn/polyfn/internal/config"
	"github.com/polyfn/polyfn/internal/hosttest"
)

// The build rows of a Node.js function with a dependency (a local package,
// so npm needs no network): a first build into an empty cache that ran
// npm, then cached builds that ran nothing (builds fails a row whose
// build was not cached), each row with its samples; a
// function whose build fails gets rows with the error, not figures.
func TestBuildRows(t *testing.T) {
	dir := t.TempDir()
	hosttest.Reachable(t, dir)
	write := func(path, text string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(dir, "dep", "package.json"), `{"name": "dep", "version": "1.0.0", "main": "index.js"}`)
	write(filepath.Join(dir, "dep", "index.js"), "module.exports = 1;\n")
	write(filepath.Join(dir, "fn", "package.json"), `{"name": "fn", "dependencies": {"dep": "file:`+filepath.Join(dir, "dep")+`"}}`)
	write(filepath.Join(dir, "fn", "index.js"), "exports.noop = async () => null;\n")
	write(filepath.Join(dir, "bad", "package.json"), `{"dependencies": `)
	write(filepath.Join(dir, "bad", "index.js"), "exports.noop = async () => null;\n")
	cfg, err := config.Parse(filepath.Join(dir, "polyfn.yaml"), []byte(`functions:
  - {name: fn, runtime: node, handler: index.noop, codedir: fn}
  - {name: bad, runtime: node, handler: index.noop, codedir: bad}
`))
	if err != nil {
		t.Fatal(err)
	}
	r := &runner{cfg: cfg, p: paramsFor(true), rep: &Report{}, tmp: t.TempDir()}
	r.builds(context.Background())
	rows := map[string]Row{}
	for _, row := range r.rep.Rows {
		if row.Section != SectionBuild {
			t.Errorf("row in section %q, want %q", row.Section, SectionBuild)
		}
		rows[row.Function+"/"+row.Label] = row
	}
	if len(r.rep.Rows) != 4 {
		t.Fatalf("got %d rows, want 2 per function: %+v", len(r.rep.Rows), r.rep.Rows)
	}
	first, cached := rows["fn/first build, empty cache"], rows["fn/cached, host start"]
	if first.Error != "" || first.Values["samples"] != float64(r.p.buildFirst) || first.Values["p50_us"] <= 0 {
		t.Errorf("first build row: %+v", first)
	}
	if cached.Error != "" || cached.Values["samples"] != float64(r.p.buildCached) || cached.Values["p50_us"] <= 0 {
		t.Errorf("cached row: %+v", cached)
	}
	for _, label := range []string{"first build, empty cache", "cached, host start"} {
		if row := rows["bad/"+label]; row.Error == "" || row.Values["p50_us"] != 0 {
			t.Errorf("bad %s: want an error and no figures: %+v", label, row)
		}
	}
	if len(r.rep.Errors) != 1 {
		t.Errorf("report errors: %q, want the bad function's", r.rep.Errors)
	}
}
