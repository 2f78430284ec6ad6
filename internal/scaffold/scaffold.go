// Package scaffold writes new polyfn projects and functions: a commented
// polyfn.yaml (Init), and a function's directory with a handler, a
// dependency file and a test in the language's own framework, added to
// polyfn.yaml with its comments and order kept (New).
package scaffold

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"text/template"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/polyfn/polyfn/internal/config"
	"github.com/polyfn/polyfn/internal/runtimes"
)

//go:embed templates
var templates embed.FS

// GoModTimeout bounds the `go mod tidy` New runs in a Go function's
// directory (it may fetch the SDK's dependencies through the module proxy).
const GoModTimeout = 5 * time.Minute

// locate finds the Go SDK's copy a new Go function's go.mod points at.
var locate = runtimes.Locate

// ConfigFile is the name Init writes and New edits by default.
const ConfigFile = "polyfn.yaml"

// Template is one runtime's template.
type Template struct {
	Runtime string
	// Handler is the handler polyfn.yaml names; empty for go.
	Handler string
	// Files are the files written into the codedir.
	Files []string
	// Test is how to run the template's test in the codedir.
	Test  string
	About string
}

// Templates lists the templates, by runtime.
func Templates() []Template {
	var ts []Template
	for _, rt := range []string{runtimes.Python, runtimes.Node, "go"} {
		t := Template{Runtime: rt}
		ents, _ := fs.ReadDir(templates, "templates/"+rt)
		for _, e := range ents {
			t.Files = append(t.Files, strings.TrimSuffix(e.Name(), ".tmpl"))
		}
		switch rt {
		case runtimes.Python:
			t.Handler, t.Test, t.About = "main.handler", "python3 -m pytest", "Python 3 handler(event, context), requirements.txt, a pytest test"
		case runtimes.Node:
			t.Handler, t.Test, t.About = "index.handler", "node --test", "Node.js async handler(event, context) (CommonJS), package.json, a node:test test"
		default:
			t.Test, t.About = "go test", "Go main package with the polyfn SDK, go.mod, a go test test"
		}
		ts = append(ts, t)
	}
	return ts
}

// Triggers are the triggers New can wire a function to.
var Triggers = []string{"http", "mqtt", "timer"}

// Init writes a commented polyfn.yaml into dir (created if need be). It
// refuses to overwrite one.
func Init(dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	file := filepath.Join(dir, ConfigFile)
	data, err := templates.ReadFile("templates/polyfn.yaml.tmpl")
	if err != nil {
		return "", err
	}
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if errors.Is(err, fs.ErrExist) {
		return "", fmt.Errorf("%s exists already: add functions to it with polyfn new", file)
	}
	if err != nil {
		return "", err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return "", err
	}
	return file, f.Close()
}

// Options are New's.
type Options struct {
	// Config is the polyfn.yaml the function is added to.
	Config string
	Name   string
	// Runtime is python3, node or go.
	Runtime string
	// Trigger is http (the default), mqtt or timer.
	Trigger string
	// Codedir is where the function's files go, relative to the config
	// file's directory; default functions/NAME.
	Codedir string
	// Log receives progress notes (the go mod tidy run); may be nil.
	Log func(format string, args ...any)
}

// Result is what New wrote.
type Result struct {
	Codedir string
	Files   []string
	Test    string
}

// New writes a function's directory from its runtime's template and adds
// the function to the config file, keeping the file's comments and order.
// Nothing is written when the name is taken, the directory is not empty
// or the config file does not load.
func New(ctx context.Context, o Options) (*Result, error) {
	var tpl *Template
	for _, t := range Templates() {
		if t.Runtime == o.Runtime {
			tpl = &t
		}
	}
	if tpl == nil {
		return nil, fmt.Errorf("--runtime %q: not a template (polyfn new --list shows them)", o.Runtime)
	}
	if o.Trigger == "" {
		o.Trigger = "http"
	}
	if !contains(Triggers, o.Trigger) {
		return nil, fmt.Errorf("--trigger %q: use one of %s", o.Trigger, strings.Join(Triggers, ", "))
	}
	if !nameRE.MatchString(o.Name) || len(o.Name) > config.MaxFunctionNameBytes {
		return nil, fmt.Errorf("invalid name %q: use letters, digits, '_' and '-', at most %d bytes, starting with a letter", o.Name, config.MaxFunctionNameBytes)
	}
	cfgData, err := os.ReadFile(o.Config)
	if err != nil {
		return nil, fmt.Errorf("%w (polyfn init writes one)", err)
	}
	if _, err := config.Parse(o.Config, cfgData); err != nil {
		return nil, fmt.Errorf("the config does not load, so no function was added: %w", err)
	}
	if o.Codedir == "" {
		o.Codedir = path.Join("functions", o.Name)
	}
	base := filepath.Dir(o.Config)
	dir := o.Codedir
	if !filepath.IsAbs(dir) {
		dir = filepath.Join(base, dir)
	}
	if ents, err := os.ReadDir(dir); err == nil && len(ents) > 0 {
		return nil, fmt.Errorf("%s is not empty: choose another --codedir or name", dir)
	}
	edited, err := addFunction(cfgData, o, tpl)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", o.Config, err)
	}
	res := &Result{Codedir: dir, Test: tpl.Test}
	_, statErr := os.Stat(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	// A failure from here on takes back what was written.
	ok := false
	defer func() {
		if ok {
			return
		}
		if statErr != nil {
			os.RemoveAll(dir)
			return
		}
		for _, f := range append(res.Files, "go.sum") {
			os.Remove(filepath.Join(dir, f))
		}
	}()
	sdk, api := locate().GoSDK()
	data := map[string]string{
		"Name": o.Name, "Trigger": o.Trigger, "SDK": sdk, "API": api,
		"Package": strings.ToLower(o.Name),
		"About":   about(o.Trigger),
	}
	for _, f := range tpl.Files {
		text, err := templates.ReadFile("templates/" + o.Runtime + "/" + f + ".tmpl")
		if err != nil {
			return nil, err
		}
		t, err := template.New(f).Option("missingkey=error").Parse(string(text))
		if err != nil {
			return nil, err
		}
		var b bytes.Buffer
		if err := t.Execute(&b, data); err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(dir, f), b.Bytes(), 0o644); err != nil {
			return nil, err
		}
		res.Files = append(res.Files, f)
	}
	if o.Runtime == "go" {
		if err := goModTidy(ctx, dir, sdk, api, o.Log); err != nil {
			return nil, err
		}
		res.Files = append(res.Files, "go.sum")
	}
	// The edit is checked again as a whole, now that codedir exists.
	if _, err := config.Parse(o.Config, edited); err != nil {
		return nil, fmt.Errorf("the edited config does not load (it was left as it was): %w", err)
	}
	if err := writeAtomic(o.Config, edited); err != nil {
		return nil, err
	}
	ok = true
	return res, nil
}

var nameRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_-]*$`)

func about(trigger string) string {
	switch trigger {
	case "mqtt":
		return "answers MQTT messages on its topic"
	case "timer":
		return "runs on a schedule"
	}
	return "answers HTTP requests"
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// addFunction returns cfg with the function appended to its functions
// list. The YAML node tree says where the list is and how it is indented;
// the entry is inserted as text there, so that every other byte of the
// file — comments, blank lines, order, quoting — stays as it was. A list
// written in flow style ([a, b]) is re-encoded from the node tree instead.
func addFunction(cfg []byte, o Options, tpl *Template) ([]byte, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(cfg, &doc); err != nil {
		return nil, err
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, errors.New("not a mapping of sections")
	}
	root := doc.Content[0]
	var key, fns, next *yaml.Node
	for i := 0; i+1 < len(root.Content); i += 2 {
		if root.Content[i].Value == "functions" {
			key, fns = root.Content[i], root.Content[i+1]
			if i+2 < len(root.Content) {
				next = root.Content[i+2]
			}
		}
	}
	if fns != nil && fns.Kind == yaml.SequenceNode {
		for _, f := range fns.Content {
			for i := 0; f.Kind == yaml.MappingNode && i+1 < len(f.Content); i += 2 {
				if f.Content[i].Value == "name" && f.Content[i+1].Value == o.Name {
					return nil, fmt.Errorf("line %d: a function named %q exists already", f.Content[i+1].Line, o.Name)
				}
			}
		}
	}
	entry := functionEntry(o, tpl)
	lines := strings.SplitAfter(string(cfg), "\n")
	if n := len(lines); n > 0 && lines[n-1] == "" {
		lines = lines[:n-1]
	}
	if n := len(lines); n > 0 && !strings.HasSuffix(lines[n-1], "\n") {
		lines[n-1] += "\n"
	}
	insert := func(after int, indent int, blank bool) []byte {
		var b strings.Builder
		for _, l := range lines[:after] {
			b.WriteString(l)
		}
		if blank {
			b.WriteString("\n")
		}
		pad := strings.Repeat(" ", indent)
		for i, l := range strings.Split(strings.TrimSuffix(entry, "\n"), "\n") {
			switch {
			case strings.HasPrefix(l, "#"):
				b.WriteString(pad + l + "\n")
			case i == 1:
				b.WriteString(pad + "- " + l + "\n")
			default:
				b.WriteString(pad + "  " + l + "\n")
			}
		}
		for _, l := range lines[after:] {
			b.WriteString(l)
		}
		return []byte(b.String())
	}
	switch {
	case fns == nil:
		// No functions section: one at the end.
		var b strings.Builder
		for _, l := range lines {
			b.WriteString(l)
		}
		b.WriteString("\nfunctions:\n")
		lines = strings.SplitAfter(b.String(), "\n")
		lines = lines[:len(lines)-1]
		return insert(len(lines), 2, false), nil
	case fns.Kind == yaml.ScalarNode && fns.Tag == "!!null" && fns.Line == key.Line,
		fns.Kind == yaml.SequenceNode && fns.Style&yaml.FlowStyle != 0 && len(fns.Content) == 0 && fns.Line == key.Line:
		// functions: or functions: []: the list starts on the next line.
		l := lines[key.Line-1]
		colon := strings.Index(l[key.Column-1:], ":") + key.Column
		lines[key.Line-1] = l[:colon] + trailingComment(l[colon:]) + "\n"
		return insert(key.Line, key.Column-1+2, false), nil
	case fns.Kind == yaml.SequenceNode && fns.Style&yaml.FlowStyle == 0 && len(fns.Content) > 0:
		first := fns.Content[0]
		dash := first.Column - 3 // the "- " before the item's first key
		if dash < 0 || first.Line > len(lines) || !strings.HasPrefix(lines[first.Line-1][dash:], "- ") {
			break
		}
		// The list runs to the next section, less the blank lines and the
		// comments at column 1 before it (those are the next section's).
		end := len(lines)
		if next != nil {
			end = next.Line - 1
		}
		for end > key.Line && (strings.TrimSpace(lines[end-1]) == "" || strings.HasPrefix(lines[end-1], "#")) {
			end--
		}
		// Items set apart by blank lines get one before the new item.
		blank := false
		for _, l := range lines[first.Line:end] {
			if strings.TrimSpace(l) == "" {
				blank = true
			}
		}
		return insert(end, dash, blank), nil
	}
	return reencode(&doc, fns, entry)
}

// functionEntry is the new function's list item: comment lines, then the
// item's mapping, unindented.
func functionEntry(o Options, tpl *Template) string {
	var b strings.Builder
	switch o.Trigger {
	case "mqtt":
		fmt.Fprintf(&b, "# polyfn invoke --topic %s/in -d '{\"name\":\"mqtt\"}'; the answer is published on %s/out\n", o.Name, o.Name)
	case "timer":
		fmt.Fprintf(&b, "# runs every minute; polyfn invoke %s runs it now\n", o.Name)
	default:
		fmt.Fprintf(&b, "# curl -d '{\"name\":\"polyfn\"}' 127.0.0.1:8080/function/%s\n", o.Name)
	}
	fmt.Fprintf(&b, "name: %s\nruntime: %s\n", o.Name, o.Runtime)
	if tpl.Handler != "" {
		fmt.Fprintf(&b, "handler: %s\n", tpl.Handler)
	}
	fmt.Fprintf(&b, "codedir: %s\n", yamlString(prefixDot(o.Codedir)))
	switch o.Trigger {
	case "mqtt":
		fmt.Fprintf(&b, "triggers:\n  mqtt:\n    - subscribe: {topic: %s/in, qos: 1}\n      publish: {topic: %s/out, qos: 1}\n", o.Name, o.Name)
	case "timer":
		b.WriteString("triggers:\n  timer:\n    - schedule: \"@every 1m\"\n")
	}
	return b.String()
}

// trailingComment returns the comment at the end of the rest of a line
// after a key's colon (" # ..."), dropping the value before it.
func trailingComment(rest string) string {
	rest = strings.TrimRight(rest, "\n")
	if i := strings.Index(rest, " #"); i >= 0 {
		return rest[i:]
	}
	return ""
}

// reencode appends the entry through the node tree and encodes the whole
// document again: comments and order stay, blank lines may not.
func reencode(doc, fns *yaml.Node, entry string) ([]byte, error) {
	if fns.Kind != yaml.SequenceNode {
		return nil, fmt.Errorf("line %d: functions is not a list", fns.Line)
	}
	var item yaml.Node
	if err := yaml.Unmarshal([]byte(entry), &item); err != nil {
		return nil, err
	}
	fns.Content = append(fns.Content, item.Content[0])
	var out bytes.Buffer
	enc := yaml.NewEncoder(&out)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

// prefixDot writes a relative codedir as ./DIR, as the examples do.
func prefixDot(dir string) string {
	if filepath.IsAbs(dir) || strings.HasPrefix(dir, ".") {
		return dir
	}
	return "./" + dir
}

// yamlString quotes s when YAML would not read it back as the same string.
func yamlString(s string) string {
	var v string
	if yaml.Unmarshal([]byte(s), &v) == nil && v == s {
		return s
	}
	q, _ := yaml.Marshal(s)
	return strings.TrimSpace(string(q))
}

// goModTidy completes a Go function's go.mod and go.sum. The go.sum starts
// from the SDK's sums, so that no checksum lookup is needed for them; the
// SDK's own dependencies come from the module cache or the module proxy.
func goModTidy(ctx context.Context, dir, sdk, api string, logf func(string, ...any)) error {
	if sdk != "" {
		var sums []string
		seen := map[string]bool{}
		for _, f := range []string{filepath.Join(sdk, "go.sum"), filepath.Join(api, "go.sum")} {
			data, err := os.ReadFile(f)
			if err != nil {
				continue
			}
			for _, l := range strings.Split(string(data), "\n") {
				if l = strings.TrimSpace(l); l != "" && !seen[l] {
					seen[l] = true
					sums = append(sums, l)
				}
			}
		}
		sort.Strings(sums)
		if len(sums) > 0 {
			if err := os.WriteFile(filepath.Join(dir, "go.sum"), []byte(strings.Join(sums, "\n")+"\n"), 0o644); err != nil {
				return err
			}
		}
	}
	if logf != nil {
		logf("go mod tidy in %s", dir)
	}
	ctx, cancel := context.WithTimeout(ctx, GoModTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, runtimes.GoTool(), "mod", "tidy")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOWORK=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		hint := ""
		if sdk == "" {
			hint = "; this polyfn carries no Go SDK (install it with make install)"
		}
		return fmt.Errorf("go mod tidy in %s: %w\n%s%s", dir, err, strings.TrimSpace(string(out)), hint)
	}
	return nil
}

func writeAtomic(file string, data []byte) error {
	st, err := os.Stat(file)
	if err != nil {
		return err
	}
	tmp := file + ".tmp"
	if err := os.WriteFile(tmp, data, st.Mode().Perm()); err != nil {
		return err
	}
	return os.Rename(tmp, file)
}
