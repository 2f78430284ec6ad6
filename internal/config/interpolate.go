package config

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Interpolation in config values (docs/config.md, "Secrets and the
// environment"):
//
//	${NAME}          the environment variable NAME; unset is an error
//	${NAME:-default} NAME, or default when NAME is unset or empty
//	${file:PATH}     the contents of PATH (relative to the config file's
//	                 directory), one trailing line break removed
//	$${              a literal ${
//
// Values taken from the environment or a file are secret: they are recorded
// in Config.Secrets and masked wherever the config is printed.

var varNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// maxSecretFileBytes bounds a file read by ${file:PATH} or env_from.
const maxSecretFileBytes = 1 << 20

// interpolate returns n with its value expanded, or n itself when it holds
// no ${. The copy keeps n's position; its tag is resolved again from the
// expanded text (a string field keeps it a string). On an error it reports
// it and returns nil.
func (d *decoder) interpolate(n *yaml.Node, v reflect.Value, path string) *yaml.Node {
	if n.Kind != yaml.ScalarNode || n.Tag == "!!null" || !strings.Contains(n.Value, "${") {
		return n
	}
	val, err := d.expand(n.Value)
	if err != nil {
		d.errorf(n, path, "%v", err)
		return nil
	}
	c := *n
	c.Value = val
	c.Style = 0
	c.Tag = ""
	if v.Kind() == reflect.String {
		c.Tag = "!!str"
	}
	return &c
}

// expand replaces every ${...} of s.
func (d *decoder) expand(s string) (string, error) {
	var b strings.Builder
	for {
		i := strings.Index(s, "${")
		if i < 0 {
			b.WriteString(s)
			return b.String(), nil
		}
		if i > 0 && s[i-1] == '$' {
			// $${ is a literal ${.
			b.WriteString(s[:i-1])
			b.WriteString("${")
			s = s[i+2:]
			continue
		}
		b.WriteString(s[:i])
		end := strings.IndexByte(s[i:], '}')
		if end < 0 {
			return "", fmt.Errorf("unclosed ${ in %q (write $${ for a literal ${)", s[i:])
		}
		val, err := d.resolve(s[i+2 : i+end])
		if err != nil {
			return "", err
		}
		b.WriteString(val)
		s = s[i+end+1:]
	}
}

// resolve returns the value of one ${expr}.
func (d *decoder) resolve(expr string) (string, error) {
	if p, ok := strings.CutPrefix(expr, "file:"); ok {
		if p == "" {
			return "", errors.New("${file:} names no file")
		}
		if d.withoutSecrets {
			return "", nil
		}
		data, err := readSecretFile(d.path(p))
		if err != nil {
			return "", fmt.Errorf("${file:%s}: %w", p, err)
		}
		v := trimLineBreak(string(data))
		d.secrets.Add(v)
		return v, nil
	}
	name, def, hasDef := strings.Cut(expr, ":-")
	if !varNameRE.MatchString(name) {
		return "", fmt.Errorf("invalid variable name %q in ${%s} (want letters, digits and '_', or file:PATH)", name, expr)
	}
	v, set := os.LookupEnv(name)
	switch {
	case hasDef && v == "":
		return def, nil
	case !set && d.withoutSecrets:
		return "", nil
	case !set:
		return "", fmt.Errorf("environment variable %s is not set (set it, or give a default: ${%s:-default})", name, name)
	}
	d.secrets.Add(v)
	return v, nil
}

// path returns p made absolute against the config file's directory.
func (d *decoder) path(p string) string {
	if filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(filepath.Dir(d.file), p)
}

func readSecretFile(p string) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st.IsDir() {
		return nil, fmt.Errorf("%s is a directory", p)
	}
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(io.LimitReader(f, maxSecretFileBytes+1)); err != nil {
		return nil, err
	}
	if buf.Len() > maxSecretFileBytes {
		return nil, fmt.Errorf("%s is larger than %d bytes", p, maxSecretFileBytes)
	}
	return buf.Bytes(), nil
}

func trimLineBreak(s string) string {
	s = strings.TrimSuffix(s, "\n")
	return strings.TrimSuffix(s, "\r")
}

// loadEnvFrom reads the env_from sources of every function and app into
// their env (a key set in env wins) and records the values as secrets.
func loadEnvFrom(c *Config, d *decoder) {
	for i := range c.Functions {
		f := &c.Functions[i]
		f.Env = d.envFrom(fmt.Sprintf("functions[%d].env_from", i), f.EnvFrom, f.Env)
	}
	for name, a := range c.Apps {
		a.Env = d.envFrom(joinKey("apps", name)+".env_from", a.EnvFrom, a.Env)
		c.Apps[name] = a
	}
}

// envFrom merges the sources at key p under env and returns the result.
func (d *decoder) envFrom(p string, sources []string, env map[string]string) map[string]string {
	if len(sources) == 0 {
		return env
	}
	merged := map[string]string{}
	for i, src := range sources {
		key := fmt.Sprintf("%s[%d]", p, i)
		if src == "" {
			d.errorf(d.at(key), key, "empty path: name a file of KEY=VALUE lines or a directory of files")
			continue
		}
		if d.withoutSecrets {
			continue
		}
		vals, err := readEnvSource(d.path(src))
		if err != nil {
			d.errorf(d.at(key), key, "%v", err)
			continue
		}
		for k, v := range vals {
			merged[k] = v
			d.secrets.Add(v)
		}
	}
	for k, v := range env {
		merged[k] = v
	}
	return merged
}

// readEnvSource reads a file of KEY=VALUE lines (blank lines and lines
// starting with # are skipped; an optional "export " prefix is allowed), or
// a directory whose regular files are the variables: the file's name is the
// key, its contents (one trailing line break removed) the value. Names
// starting with '.' are skipped (a mounted Kubernetes Secret keeps its
// bookkeeping under ..data).
func readEnvSource(p string) (map[string]string, error) {
	st, err := os.Stat(p)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	if !st.IsDir() {
		data, err := readSecretFile(p)
		if err != nil {
			return nil, err
		}
		sc := bufio.NewScanner(bytes.NewReader(data))
		sc.Buffer(make([]byte, 64<<10), maxSecretFileBytes)
		for line := 1; sc.Scan(); line++ {
			t := strings.TrimSpace(sc.Text())
			if t == "" || strings.HasPrefix(t, "#") {
				continue
			}
			t = strings.TrimPrefix(t, "export ")
			k, v, ok := strings.Cut(t, "=")
			k = strings.TrimSpace(k)
			if !ok || !varNameRE.MatchString(k) {
				return nil, fmt.Errorf("%s:%d: want KEY=VALUE with KEY of letters, digits and '_'", p, line)
			}
			out[k] = unquote(v)
		}
		if err := sc.Err(); err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		return out, nil
	}
	entries, err := os.ReadDir(p)
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), ".") {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	for _, name := range names {
		fp := filepath.Join(p, name)
		st, err := os.Stat(fp) // follows the ..data links of a mounted Secret
		if err != nil {
			return nil, err
		}
		if !st.Mode().IsRegular() {
			continue
		}
		if strings.ContainsAny(name, "=\x00") {
			return nil, fmt.Errorf("%s: a file name with '=' cannot be a variable name", fp)
		}
		data, err := readSecretFile(fp)
		if err != nil {
			return nil, err
		}
		out[name] = trimLineBreak(string(data))
	}
	return out, nil
}

// unquote removes one pair of matching single or double quotes around v.
func unquote(v string) string {
	if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
		return v[1 : len(v)-1]
	}
	return v
}

// ReadEnvSource reads an env_from source (a file of KEY=VALUE lines or a
// directory of files) as Load does.
func ReadEnvSource(path string) (map[string]string, error) { return readEnvSource(path) }

// ReadSecretFile reads a ${file:PATH} file as Load does (bounded, one
// trailing line break removed).
func ReadSecretFile(path string) (string, error) {
	data, err := readSecretFile(path)
	return trimLineBreak(string(data)), err
}
