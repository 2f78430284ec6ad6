package azure

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// FunctionJSON is the name of the file that declares a function in host
// indexing.
const FunctionJSON = "function.json"

// DefaultScriptFiles are tried, in this order, in the function's directory
// when function.json has no "scriptFile"; the first that exists is the
// function's script.
var DefaultScriptFiles = []string{"index.js", "index.mjs", "index.cjs", "__init__.py", "main.py", "run.py"}

// functionName is the official host's rule for function names.
var functionName = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_\-]{0,127}$`)

// functionFile is the part of function.json this package reads.
type functionFile struct {
	Disabled   any               `json:"disabled"`
	ScriptFile string            `json:"scriptFile"`
	EntryPoint string            `json:"entryPoint"`
	Bindings   []json.RawMessage `json:"bindings"`
}

// IndexApp reads the functions of an app from <appDir>/*/function.json
// (host indexing), in directory-name order. A directory without
// function.json is skipped, and so is a function with "disabled": true (or
// "true"). A function.json that cannot be used gives an error naming the
// file and does not stop the others.
//
// Each function gets: the directory's name as its name; the absolute
// directory; the absolute script file — "scriptFile" resolved against the
// function's directory, or else the first of DefaultScriptFiles that exists
// there (it is an error when the file does not exist or none is found);
// "entryPoint"; a language guessed from the script's extension (".js",
// ".mjs", ".cjs" → node, ".py" → python, ".ps1" → powershell, else
// empty); and an id derived from the function's directory, the same in
// every worker of the app.
func IndexApp(appDir string) ([]*Function, []error) {
	abs, err := filepath.Abs(appDir)
	if err != nil {
		return nil, []error{fmt.Errorf("app directory %s: %w", appDir, err)}
	}
	entries, err := os.ReadDir(abs)
	if err != nil {
		return nil, []error{fmt.Errorf("app directory %s: %w", abs, err)}
	}
	var fns []*Function
	var errs []error
	for _, e := range entries {
		dir := filepath.Join(abs, e.Name())
		if st, err := os.Stat(dir); err != nil || !st.IsDir() {
			continue // not a directory (or a broken link)
		}
		path := filepath.Join(dir, FunctionJSON)
		data, err := os.ReadFile(path)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", path, err))
			continue
		}
		fn, err := readFunction(dir, data)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", path, err))
			continue
		}
		if fn != nil {
			fns = append(fns, fn)
		}
	}
	return fns, errs
}

// readFunction builds the function declared by data, the function.json of
// dir; nil when the function is disabled.
func readFunction(dir string, data []byte) (*Function, error) {
	var ff functionFile
	dec := json.NewDecoder(bytes.NewReader(bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))))
	if err := dec.Decode(&ff); err != nil {
		return nil, fmt.Errorf("invalid JSON: %v", err)
	}
	if disabled(ff.Disabled) {
		return nil, nil
	}
	name := filepath.Base(dir)
	if !functionName.MatchString(name) {
		return nil, fmt.Errorf("invalid function name %q: use a letter, then letters, digits, '_' or '-' (at most 128)", name)
	}
	fn := &Function{
		ID:         StableID(dir),
		Name:       name,
		Directory:  dir,
		EntryPoint: ff.EntryPoint,
	}
	script, err := scriptFile(dir, ff.ScriptFile)
	if err != nil {
		return nil, err
	}
	fn.ScriptFile = script
	fn.Language = languageOf(script)
	if len(ff.Bindings) == 0 {
		return nil, errors.New("no bindings")
	}
	if err := fn.setBindings(ff.Bindings); err != nil {
		return nil, err
	}
	return fn, nil
}

func disabled(v any) bool {
	switch d := v.(type) {
	case bool:
		return d
	case string:
		return strings.EqualFold(strings.TrimSpace(d), "true")
	}
	return false
}

// scriptFile resolves the function's script file; see IndexApp.
func scriptFile(dir, configured string) (string, error) {
	if configured != "" {
		p := filepath.FromSlash(configured)
		if !filepath.IsAbs(p) {
			p = filepath.Join(dir, p)
		}
		p = filepath.Clean(p)
		st, err := os.Stat(p)
		if err != nil || st.IsDir() {
			return "", fmt.Errorf("scriptFile %q: %s does not exist", configured, p)
		}
		return p, nil
	}
	for _, name := range DefaultScriptFiles {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p, nil
		}
	}
	return "", fmt.Errorf("no script file: set \"scriptFile\" or add one of %s", strings.Join(DefaultScriptFiles, ", "))
}

func languageOf(script string) string {
	switch strings.ToLower(filepath.Ext(script)) {
	case ".js", ".mjs", ".cjs":
		return "node"
	case ".py":
		return "python"
	case ".ps1":
		return "powershell"
	}
	return ""
}
