package azure

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeFiles(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(root, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestIndexApp(t *testing.T) {
	app := t.TempDir()
	writeFiles(t, app, map[string]string{
		"host.json":    `{"version":"2.0"}`,
		"package.json": `{}`,
		// Node function.json app: req in, res out.
		"HttpNode/function.json": `{
  "bindings": [
    {"authLevel": "function", "type": "httpTrigger", "direction": "in", "name": "req", "methods": ["get", "post"]},
    {"type": "http", "direction": "out", "name": "res"}
  ]
}`,
		"HttpNode/index.js": "module.exports = async function (context, req) { context.res = { body: 'hi' }; };",
		// Python function.json app: req in, $return out, explicit scriptFile.
		"HttpPy/function.json": "\ufeff" + `{
  "scriptFile": "__init__.py",
  "entryPoint": "main",
  "bindings": [
    {"authLevel": "anonymous", "type": "httpTrigger", "direction": "in", "name": "req", "methods": ["get"], "route": "items/{id:int?}"},
    {"type": "http", "direction": "out", "name": "$return"}
  ]
}`,
		"HttpPy/__init__.py": "def main(req): return 'hi'",
		// TypeScript build output elsewhere.
		"HttpTs/function.json": `{"scriptFile": "../dist/HttpTs/index.js", "bindings": [
  {"type": "httpTrigger", "direction": "in", "name": "req"}, {"type": "http", "direction": "out", "name": "res"}]}`,
		"dist/HttpTs/index.js": "exports.default = async () => ({});",
		// main.py default.
		"PyMain/function.json": `{"bindings": [{"type": "httpTrigger", "direction": "in", "name": "req"}, {"type": "http", "direction": "out", "name": "$return"}]}`,
		"PyMain/main.py":       "",
		// Broken JSON.
		"Broken/function.json": `{"bindings": [`,
		"Broken/index.js":      "",
		// Disabled.
		"Off/function.json":    `{"disabled": true, "bindings": [{"type": "httpTrigger", "direction": "in", "name": "req"}]}`,
		"Off/index.js":         "",
		"OffStr/function.json": `{"disabled": "True", "bindings": [{"type": "httpTrigger", "direction": "in", "name": "req"}]}`,
		// Script file missing.
		"NoScript/function.json": `{"bindings": [{"type": "httpTrigger", "direction": "in", "name": "req"}]}`,
		"Missing/function.json":  `{"scriptFile": "gone.js", "bindings": [{"type": "httpTrigger", "direction": "in", "name": "req"}]}`,
		// Bad binding.
		"BadBinding/function.json": `{"bindings": [{"type": "httpTrigger", "direction": "up", "name": "req"}]}`,
		"BadBinding/index.js":      "",
		// A timer function: indexed, no HTTP.
		"Tick/function.json": `{"bindings": [{"type": "timerTrigger", "direction": "in", "name": "myTimer", "schedule": "0 */5 * * * *"}]}`,
		"Tick/index.js":      "",
		// Directories without function.json are skipped.
		"node_modules/x/index.js": "",
		"shared/util.js":          "",
	})

	fns, errs := IndexApp(app)

	wantErrs := map[string]string{
		"Broken":     "invalid JSON",
		"NoScript":   "no script file",
		"Missing":    "gone.js",
		"BadBinding": `invalid direction "up"`,
	}
	if len(errs) != len(wantErrs) {
		t.Errorf("errors = %v, want %d", errs, len(wantErrs))
	}
	for _, err := range errs {
		matched := false
		for dir, substr := range wantErrs {
			file := filepath.Join(app, dir, "function.json")
			if strings.HasPrefix(err.Error(), file+": ") {
				matched = true
				if !strings.Contains(err.Error(), substr) {
					t.Errorf("error %q does not contain %q", err, substr)
				}
			}
		}
		if !matched {
			t.Errorf("unexpected error %q", err)
		}
	}

	type want struct {
		script, entry, lang, trigger, out, route string
		methods                                  string
	}
	wants := map[string]want{
		"HttpNode": {script: "HttpNode/index.js", lang: "node", trigger: "req", out: "res", route: "HttpNode", methods: "GET,POST"},
		"HttpPy":   {script: "HttpPy/__init__.py", entry: "main", lang: "python", trigger: "req", out: "$return", route: "items/{id:int?}", methods: "GET"},
		"HttpTs":   {script: "dist/HttpTs/index.js", lang: "node", trigger: "req", out: "res", route: "HttpTs"},
		"PyMain":   {script: "PyMain/main.py", lang: "python", trigger: "req", out: "$return", route: "PyMain"},
		"Tick":     {script: "Tick/index.js", lang: "node"},
	}
	var names []string
	for _, fn := range fns {
		names = append(names, fn.Name)
	}
	if got := strings.Join(names, ","); got != "HttpNode,HttpPy,HttpTs,PyMain,Tick" {
		t.Fatalf("functions = %s", got)
	}
	again, _ := IndexApp(app)
	for i, fn := range again {
		if fn.ID != fns[i].ID {
			t.Errorf("%s: id %q then %q: ids must be stable across indexings (every worker gets the same)", fn.Name, fns[i].ID, fn.ID)
		}
	}
	ids := map[string]bool{}
	for _, fn := range fns {
		w := wants[fn.Name]
		if !uuidRe.MatchString(fn.ID) || ids[fn.ID] {
			t.Errorf("%s: ID = %q", fn.Name, fn.ID)
		}
		ids[fn.ID] = true
		if fn.Directory != filepath.Join(app, fn.Name) || !filepath.IsAbs(fn.Directory) {
			t.Errorf("%s: Directory = %q", fn.Name, fn.Directory)
		}
		if fn.ScriptFile != filepath.Join(app, filepath.FromSlash(w.script)) {
			t.Errorf("%s: ScriptFile = %q, want %q", fn.Name, fn.ScriptFile, w.script)
		}
		if fn.EntryPoint != w.entry || fn.Language != w.lang {
			t.Errorf("%s: entry/lang = %q %q", fn.Name, fn.EntryPoint, fn.Language)
		}
		if len(fn.Raw) != len(fn.Bindings) {
			t.Errorf("%s: raw = %q", fn.Name, fn.Raw)
		}
		if w.trigger == "" {
			if fn.HTTP != nil {
				t.Errorf("%s: HTTP = %+v", fn.Name, fn.HTTP)
			}
			continue
		}
		if fn.HTTP == nil {
			t.Fatalf("%s: HTTP = nil", fn.Name)
		}
		h := fn.HTTP
		if h.BindingName != w.trigger || h.OutputBinding != w.out || h.Route != w.route || strings.Join(h.Methods, ",") != w.methods {
			t.Errorf("%s: HTTP = %+v, want %+v", fn.Name, h, w)
		}
		lr := fn.LoadRequest(nil)
		if lr.FunctionId != fn.ID || lr.Metadata.Directory != fn.Directory || lr.Metadata.ScriptFile != fn.ScriptFile ||
			lr.Metadata.Bindings[w.out] == nil || len(lr.Metadata.RawBindings) != len(fn.Bindings) {
			t.Errorf("%s: LoadRequest = %v", fn.Name, lr)
		}
	}
}

func TestIndexAppMissingDir(t *testing.T) {
	fns, errs := IndexApp(filepath.Join(t.TempDir(), "nope"))
	if len(fns) != 0 || len(errs) != 1 {
		t.Fatalf("IndexApp = %v, %v", fns, errs)
	}
}

func TestIndexAppInvalidName(t *testing.T) {
	app := t.TempDir()
	writeFiles(t, app, map[string]string{
		"1bad/function.json": `{"bindings": [{"type": "httpTrigger", "direction": "in", "name": "req"}]}`,
		"1bad/index.js":      "",
	})
	fns, errs := IndexApp(app)
	if len(fns) != 0 || len(errs) != 1 || !strings.Contains(errs[0].Error(), "invalid function name") {
		t.Fatalf("IndexApp = %v, %v", fns, errs)
	}
}

func TestPrimaryScriptFile(t *testing.T) {
	const fj = `{"bindings": [{"type": "httpTrigger", "direction": "in", "name": "req"}]}`
	tests := []struct {
		name    string
		files   []string // besides function.json; a trailing "/" makes a directory, "name->target" a symbolic link
		want    string   // the script's name, or "" for an error
		wantErr string
	}{
		{name: "single index.js", files: []string{"index.js"}, want: "index.js"},
		{name: "single file of any name", files: []string{"main.py"}, want: "main.py"},
		{name: "single odd file", files: []string{"handler.txt"}, want: "handler.txt"},
		{name: "index.js among others", files: []string{"index.js", "package.json", "util.js"}, want: "index.js"},
		{name: "index.mjs", files: []string{"index.mjs", "lib.mjs"}, want: "index.mjs"},
		{name: "index.cjs", files: []string{"index.cjs", "lib.cjs"}, want: "index.cjs"},
		{name: "__init__.py", files: []string{"__init__.py", "helpers.py", "sample.dat"}, want: "__init__.py"},
		{name: "run.py", files: []string{"helpers.py", "run.py"}, want: "run.py"},
		{name: "run.ps1", files: []string{"readme.md", "run.ps1"}, want: "run.ps1"},
		{name: "run.csx", files: []string{"run.csx", "project.json"}, want: "run.csx"},
		{name: "run without extension", files: []string{"run", "x.sh"}, want: "run"},
		{name: "names in any case", files: []string{"INDEX.JS", "other.js"}, want: "INDEX.JS"},
		{name: "Run in any case", files: []string{"RUN.PY", "other.py"}, want: "RUN.PY"},
		{name: "first in name order: index.js before run.py", files: []string{"run.py", "index.js"}, want: "index.js"},
		{name: "first in name order: __init__.py before index.js", files: []string{"index.js", "__init__.py"}, want: "__init__.py"},
		{name: "first in name order: Run.py before __init__.py", files: []string{"__init__.py", "Run.py"}, want: "Run.py"},
		{name: "directories do not count", files: []string{"lib/", "node_modules/", "main.py"}, want: "main.py"},
		{name: "a directory named index.js does not count", files: []string{"index.js/", "app.js"}, want: "app.js"},
		{name: "link to a directory does not count", files: []string{"lib/", "shared->lib", "main.py"}, want: "main.py"},
		{name: "link to a file counts", files: []string{"real.js", "index.js->real.js"}, want: "index.js"},
		{name: "hidden files count", files: []string{".DS_Store", "index.js"}, want: "index.js"},
		{name: "function.json in another case is left out", files: []string{"FUNCTION.JSON", "main.py"}, want: "main.py"},

		{name: "no file", files: nil, wantErr: "holds no file besides function.json"},
		{name: "only directories", files: []string{"lib/"}, wantErr: "holds no file besides function.json"},
		{name: "main.py is not a default", files: []string{"main.py", "helpers.py"}, wantErr: "holds 2 files besides function.json and none is run.* or one of index.js, index.mjs, index.cjs, __init__.py"},
		{name: "hidden file makes two", files: []string{".gitignore", "main.py"}, wantErr: "holds 2 files"},
		{name: "run.tar.gz is not run.*", files: []string{"run.tar.gz", "x.js"}, wantErr: "none is run.*"},
		{name: "runner.py is not run.*", files: []string{"runner.py", "x.py"}, wantErr: "none is run.*"},
		{name: "index.ts is not a default", files: []string{"index.ts", "x.ts"}, wantErr: "none is run.*"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			app := t.TempDir()
			dir := filepath.Join(app, "Fn")
			writeFiles(t, dir, map[string]string{"function.json": fj})
			for _, f := range tt.files {
				switch name, target, link := strings.Cut(f, "->"); {
				case link:
					if err := os.Symlink(target, filepath.Join(dir, name)); err != nil {
						t.Skipf("symbolic links: %v", err)
					}
				case strings.HasSuffix(f, "/"):
					if err := os.MkdirAll(filepath.Join(dir, f), 0o755); err != nil {
						t.Fatal(err)
					}
				default:
					writeFiles(t, dir, map[string]string{f: ""})
				}
			}
			fns, errs := IndexApp(app)
			if tt.wantErr != "" {
				if len(fns) != 0 || len(errs) != 1 {
					t.Fatalf("IndexApp = %v, %v; want one error", fns, errs)
				}
				msg := errs[0].Error()
				if !strings.Contains(msg, "no script file in "+dir+": ") || !strings.Contains(msg, tt.wantErr) {
					t.Errorf("error = %q, want it to name %s and contain %q", msg, dir, tt.wantErr)
				}
				return
			}
			if len(errs) != 0 || len(fns) != 1 {
				t.Fatalf("IndexApp = %v, %v", fns, errs)
			}
			if want := filepath.Join(dir, tt.want); fns[0].ScriptFile != want {
				t.Errorf("ScriptFile = %q, want %q", fns[0].ScriptFile, want)
			}
		})
	}
}

func TestExplicitScriptFileWins(t *testing.T) {
	// "scriptFile" is used even when the default rule would pick another
	// file, and even when it names a file of no default name.
	app := t.TempDir()
	writeFiles(t, app, map[string]string{
		"Fn/function.json": `{"scriptFile": "handler.py", "bindings": [{"type": "httpTrigger", "direction": "in", "name": "req"}]}`,
		"Fn/handler.py":    "",
		"Fn/__init__.py":   "",
		"Fn/run.py":        "",
	})
	fns, errs := IndexApp(app)
	if len(errs) != 0 || len(fns) != 1 || fns[0].ScriptFile != filepath.Join(app, "Fn", "handler.py") {
		t.Fatalf("IndexApp = %v, %v", fns, errs)
	}
}
