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
	"slices"
	"strings"
)

// FunctionJSON is the name of the file that declares a function in host
// indexing.
const FunctionJSON = "function.json"

// DefaultScriptFiles are the file names (compared without regard to case)
// that make a file the function's script when function.json has no
// "scriptFile" and the function's directory holds more than one file
// besides function.json; so does a file named "run" with any extension
// (run.py, run.ps1, run.csx, ...). See IndexApp.
var DefaultScriptFiles = []string{"index.js", "index.mjs", "index.cjs", "__init__.py"}

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
// directory; the absolute script file; "entryPoint"; a language guessed
// from the script's extension (".js", ".mjs", ".cjs" → node, ".py" →
// python, ".ps1" → powershell, else empty); and an id derived from the
// function's directory, the same in every worker of the app.
//
// The script file is found as the official host's DeterminePrimaryScriptFile
// (HostFunctionMetadataProvider.cs) finds it:
//   - "scriptFile", resolved against the function's directory (it may be
//     absolute or lead elsewhere, as "../dist/Fn/index.js"); it is an
//     error when that file does not exist;
//   - else, when the directory holds exactly one file besides
//     function.json (whatever its name), that file;
//   - else the first file named "run" with any extension or one of
//     DefaultScriptFiles (index.js, index.mjs, index.cjs, __init__.py),
//     names compared without regard to case. The official host takes the
//     first such file in the file system's enumeration order, which is
//     unspecified; polyfn takes the first in name order (os.ReadDir's), so
//     the choice does not depend on the file system;
//   - else it is an error naming the directory. (The official host then
//     indexes the function without a script, which only custom handlers
//     can serve; polyfn has none.)
//
// Files are the directory's entries that are not directories (a symbolic
// link counts as what it points to; a broken one as a file), hidden ones
// included; function.json is left out without regard to case.
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
	return primaryScript(dir)
}

// primaryScript finds the script of the function in dir when function.json
// has no "scriptFile"; see IndexApp.
func primaryScript(dir string) (string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "", fmt.Errorf("no script file: %w", err)
	}
	var files []string
	for _, e := range entries {
		if strings.ToLower(e.Name()) == FunctionJSON {
			continue
		}
		isDir := e.IsDir()
		if e.Type()&fs.ModeSymlink != 0 {
			st, err := os.Stat(filepath.Join(dir, e.Name()))
			isDir = err == nil && st.IsDir()
		}
		if !isDir {
			files = append(files, e.Name())
		}
	}
	switch len(files) {
	case 0:
		return "", fmt.Errorf("no script file in %s: it holds no file besides %s; add the script or set \"scriptFile\"", dir, FunctionJSON)
	case 1:
		return filepath.Join(dir, files[0]), nil
	}
	for _, name := range files {
		if isDefaultScript(name) {
			return filepath.Join(dir, name), nil
		}
	}
	return "", fmt.Errorf("no script file in %s: it holds %d files besides %s and none is run.* or one of %s; set \"scriptFile\"",
		dir, len(files), FunctionJSON, strings.Join(DefaultScriptFiles, ", "))
}

// isDefaultScript reports whether a file of this name is a function's
// script by default: "run" with any extension, or one of
// DefaultScriptFiles (any case).
func isDefaultScript(name string) bool {
	lower := strings.ToLower(name)
	if strings.TrimSuffix(lower, filepath.Ext(lower)) == "run" {
		return true
	}
	return slices.ContainsFunc(DefaultScriptFiles, func(n string) bool { return strings.ToLower(n) == lower })
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
