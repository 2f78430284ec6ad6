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
