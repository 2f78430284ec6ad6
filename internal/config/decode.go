package config

import (
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"unicode"

	"go.yaml.in/yaml/v3"

	"github.com/polyfn/polyfn/internal/secret"
)

// Error is one problem in a config file, with its position.
type Error struct {
	File   string
	Line   int
	Column int
	// Key is the dotted path of the offending key, such as functions[0].timeout.
	Key string
	Msg string
}

// Error formats e as one line: file:line:column: key: message, line
// breaks and other control characters of the key and message escaped.
func (e *Error) Error() string {
	return fmt.Sprintf("%s:%d:%d: %s: %s", e.File, e.Line, e.Column, oneLine(e.Key), oneLine(e.Msg))
}

// oneLine escapes the control characters of s as Go does in quoted strings.
func oneLine(s string) string {
	if !strings.ContainsFunc(s, unicode.IsControl) {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if unicode.IsControl(r) {
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
		} else {
			b.WriteRune(r)
		}
	}
	return b.String()
}

// Errors is every problem found in a config file, in file order.
type Errors []*Error

func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// scalarParser is implemented by types written as one YAML scalar with their
// own syntax (durations, sizes).
type scalarParser interface{ parseScalar(string) error }

// decoder maps a YAML node tree onto Go structs strictly, collecting every
// error with its position and remembering where each key was found.
type decoder struct {
	file string
	errs Errors
	// pos maps a key path to the node of its value.
	pos map[string]*yaml.Node
	// failed holds the keys that failed to decode; later checks skip them.
	failed map[string]bool
	// secrets collects the values taken from the environment and files.
	secrets *secret.Set
	// withoutSecrets: the values taken from the environment and files are
	// not read (LoadOptions.WithoutSecrets).
	withoutSecrets bool
}

func (d *decoder) errorf(n *yaml.Node, key, format string, args ...any) {
	if d.failed[key] {
		return
	}
	d.errs = append(d.errs, &Error{File: d.file, Line: n.Line, Column: n.Column, Key: key, Msg: fmt.Sprintf(format, args...)})
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	}
	if n.Tag == "!!null" {
		return "null"
	}
	return fmt.Sprintf("%q", n.Value)
}

func (d *decoder) decode(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n = d.interpolate(n, v, path); n == nil {
		return
	}
	d.pos[path] = n
	if p, ok := v.Addr().Interface().(scalarParser); ok {
		if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
			d.errorf(n, path, "want a scalar, got %s", kindName(n))
			return
		}
		if err := p.parseScalar(n.Value); err != nil {
			d.errorf(n, path, "%v", err)
		}
		return
	}
	switch v.Kind() {
	case reflect.Pointer:
		pv := reflect.New(v.Type().Elem())
		d.decode(n, pv.Elem(), path)
		v.Set(pv)
	case reflect.Struct:
		d.decodeStruct(n, v, path)
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			d.errorf(n, path, "want a mapping, got %s", kindName(n))
			return
		}
		m := reflect.MakeMapWithSize(v.Type(), len(n.Content)/2)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			kp := joinKey(path, k.Value)
			if m.MapIndex(reflect.ValueOf(k.Value)).IsValid() {
				d.errorf(k, kp, "duplicate key")
				continue
			}
			ev := reflect.New(v.Type().Elem()).Elem()
			d.decode(val, ev, kp)
			m.SetMapIndex(reflect.ValueOf(k.Value), ev)
		}
		v.Set(m)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			d.errorf(n, path, "want a list, got %s", kindName(n))
			return
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			d.decode(item, s.Index(i), fmt.Sprintf("%s[%d]", path, i))
		}
		v.Set(s)
	default:
		if n.Kind != yaml.ScalarNode {
			d.errorf(n, path, "want %s, got %s", v.Kind(), kindName(n))
			return
		}
		if v.Kind() == reflect.String && n.Tag != "!!str" && n.Tag != "!!int" && n.Tag != "!!float" && n.Tag != "!!bool" {
			d.errorf(n, path, "want a string, got %s", kindName(n))
			return
		}
		if err := n.Decode(v.Addr().Interface()); err != nil {
			d.errorf(n, path, "want %s, got %s", v.Kind(), kindName(n))
		}
	}
}

func (d *decoder) decodeStruct(n *yaml.Node, v reflect.Value, path string) {
	if n.Tag == "!!null" {
		return
	}
	if n.Kind != yaml.MappingNode {
		d.errorf(n, path, "want a mapping, got %s", kindName(n))
		return
	}
	fields := map[string]int{}
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		tag := t.Field(i).Tag.Get("yaml")
		if tag != "" && tag != "-" {
			fields[tag] = i
		}
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		kp := joinKey(path, k.Value)
		idx, ok := fields[k.Value]
		if !ok {
			d.errorf(k, kp, "unknown key (known keys: %s)", knownKeys(fields))
			continue
		}
		if seen[k.Value] {
			d.errorf(k, kp, "duplicate key")
			continue
		}
		seen[k.Value] = true
		d.decode(val, v.Field(idx), kp)
	}
}

func knownKeys(fields map[string]int) string {
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return strings.Join(keys, ", ")
}

// joinKey appends key to the key path. A key that is empty, or not plain
// text, is quoted so that the path names it.
func joinKey(path, key string) string {
	if key == "" || strings.ContainsFunc(key, func(r rune) bool { return unicode.IsControl(r) || unicode.IsSpace(r) || r == '"' }) {
		key = strconv.Quote(key)
	}
	if path == "" {
		return key
	}
	return path + "." + key
}
