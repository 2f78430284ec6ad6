package config

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/polyfn/polyfn/internal/secret"
)

// Load reads, decodes, defaults and validates the config file at path.
// Problems in the file are returned together as Errors, in file order.
func Load(path string) (*Config, error) { return LoadWith(path, LoadOptions{}) }

// LoadOptions change what Load reads.
type LoadOptions struct {
	// WithoutSecrets reads none of the values the config takes from the
	// environment and from files: an unset ${VAR} (without a default) and
	// a ${file:PATH} are empty, env_from sources, key sources and TLS files
	// are not read, and none of them missing is an error. For building a
	// container image, which has none of them (polyfn build and polyfn
	// kube --pod-config, --without-secrets); such a config must not serve.
	WithoutSecrets bool
}

// LoadWith is Load with options.
func LoadWith(path string, o LoadOptions) (*Config, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	data, err := os.ReadFile(abs)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("read config: %w (polyfn init writes one; -c FILE names another)", err)
	}
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return parse(abs, data, o)
}

// Parse decodes, defaults and validates config text. file names it in errors
// and anchors relative paths.
func Parse(file string, data []byte) (*Config, error) { return parse(file, data, LoadOptions{}) }

func parse(file string, data []byte, o LoadOptions) (*Config, error) {
	d := &decoder{file: file, pos: map[string]*yaml.Node{}, secrets: &secret.Set{}, withoutSecrets: o.WithoutSecrets}
	doc, perr := parseYAML(file, data)
	if perr != nil {
		return nil, Errors{perr}
	}
	c := &Config{File: file, Dir: filepath.Dir(file), Secrets: d.secrets}
	d.decode(doc, reflect.ValueOf(c).Elem(), "")
	loadEnvFrom(c, d)
	secret.Process.AddAll(d.secrets)
	// Validate even after decoding errors, so that one run reports every
	// problem; keys that already failed to decode are not reported twice.
	d.failed = map[string]bool{}
	for _, e := range d.errs {
		d.failed[e.Key] = true
	}
	applyDefaults(c)
	applyLeaderDefaults(c)
	validate(c, d)
	validateLeaderElection(c, d)
	if len(d.errs) > 0 {
		sort.SliceStable(d.errs, func(i, j int) bool {
			a, b := d.errs[i], d.errs[j]
			return a.Line < b.Line || a.Line == b.Line && a.Column < b.Column
		})
		for _, e := range d.errs {
			e.Msg = d.secrets.Redact(e.Msg)
		}
		return nil, d.errs
	}
	return c, nil
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)

// at returns the node found at key path, or the nearest enclosing one, so that
// a missing key is reported at the mapping that lacks it.
func (d *decoder) at(path string) *yaml.Node {
	for p := path; ; {
		if n, ok := d.pos[p]; ok {
			return n
		}
		i := lastSep(p)
		if i < 0 {
			if n, ok := d.pos[""]; ok {
				return n
			}
			return &yaml.Node{Line: 1, Column: 1}
		}
		p = p[:i]
	}
}

func lastSep(p string) int {
	for i := len(p) - 1; i >= 0; i-- {
		if p[i] == '.' || p[i] == '[' {
			return i
		}
	}
	return -1
}

// explicitZero reports whether the key at path is written as a zero number or
// duration: defaults fill absent keys, so an explicit zero would be silently
// replaced otherwise.
func (d *decoder) explicitZero(path string) bool {
	n, ok := d.pos[path]
	if !ok || n.Kind != yaml.ScalarNode {
		return false
	}
	if n.Value == "0" {
		return true
	}
	v, err := time.ParseDuration(n.Value)
	return err == nil && v == 0
}

func validate(c *Config, d *decoder) {
	for _, k := range []string{"scaling.max_instances", "scaling.max_starting"} {
		if d.explicitZero(k) {
			d.errorf(d.at(k), k, "must be above zero (leave it out for the default)")
		}
	}
	if c.Scaling.MaxInstances < 0 {
		d.errorf(d.at("scaling.max_instances"), "scaling.max_instances", "must be above zero")
	}
	if c.Scaling.MaxStarting < 0 {
		d.errorf(d.at("scaling.max_starting"), "scaling.max_starting", "must be above zero")
	}
	if err := checkListen(c.HTTP.Listen); err != nil {
		d.errorf(d.at("http.listen"), "http.listen", "invalid address %q: %v, such as 127.0.0.1:8080", c.HTTP.Listen, err)
	}
	validateHTTP(c.HTTP, d)
	validateStream(c.Stream, d)
	validateAuth(c, d)
	validateCORSAll(c, d)
	for name, rt := range c.Runtimes {
		if rt.BuiltIn {
			continue
		}
		p := joinKey("runtimes", name)
		switch rt.Protocol {
		case ProtocolCall, ProtocolStream:
		case "":
			d.errorf(d.at(p+".protocol"), p+".protocol", "missing: set the worker protocol (call or stream)")
		default:
			d.errorf(d.at(p+".protocol"), p+".protocol", "unknown protocol %q (known: call, stream)", rt.Protocol)
		}
		switch {
		case rt.Discovery != DiscoveryConfig && rt.Discovery != DiscoveryApp:
			d.errorf(d.at(p+".discovery"), p+".discovery", "unknown discovery %q (known: config, app)", rt.Discovery)
		case rt.Discovery == DiscoveryApp && rt.Protocol == ProtocolCall:
			d.errorf(d.at(p+".discovery"), p+".discovery", "app discovery needs protocol stream")
		}
		if len(rt.Command) == 0 || rt.Command[0] == "" {
			d.errorf(d.at(p+".command"), p+".command", "missing: set the worker command, such as [python3, runtime.py, -c, \"{config}\"]")
		}
		if rt.Build != "" && rt.Build != "go" {
			d.errorf(d.at(p+".build"), p+".build", "unknown build %q (known: go)", rt.Build)
		}
		if rt.Address != "tcp" && rt.Address != "unix" {
			d.errorf(d.at(p+".address"), p+".address", "unknown address kind %q (known: tcp, unix)", rt.Address)
		}
		for _, k := range []string{"command", "call_command"} {
			args := rt.Command
			if k == "call_command" {
				args = rt.CallCommand
			}
			for i, a := range args {
				if strings.IndexByte(a, 0) >= 0 {
					key := fmt.Sprintf("%s.%s[%d]", p, k, i)
					d.errorf(d.at(key), key, "contains a NUL byte, which no program argument can hold")
				}
			}
		}
		validateEnv(d, p+".env", rt.Env)
	}
	if _, _, err := parseUIDRange(c.Isolation.UIDs); err != nil {
		d.errorf(d.at("isolation.uids"), "isolation.uids", "%v", err)
	}
	if u := c.Isolation.User; u != UserAuto && u != UserHost {
		if _, err := LookupUser(u); err != nil {
			d.errorf(d.at("isolation.user"), "isolation.user", "%v (or auto, host)", err)
		}
	}
	validateTriggers(c, d)
	for name, a := range c.Apps {
		p := joinKey("apps", name)
		validateIsolation(d, p, a.Limits, a.User, a.Group)
		validateEnv(d, p+".env", a.Env)
		if !nameRE.MatchString(name) {
			d.errorf(d.at(p), p, "invalid app name %q", name)
		}
		used := false
		for _, f := range c.Functions {
			used = used || f.App == name
		}
		if !used {
			d.errorf(d.at(p), p, "no function names app %s", name)
		}
	}
	seen := map[string]string{}
	appRuntime := map[string]string{}
	for i, f := range c.Functions {
		p := fmt.Sprintf("functions[%d]", i)
		switch {
		case f.Name == "":
			d.errorf(d.at(p+".name"), p+".name", "missing: every function needs a name")
		case len(f.Name) > MaxFunctionNameBytes || !nameRE.MatchString(f.Name):
			d.errorf(d.at(p+".name"), p+".name", "invalid name %q: use letters, digits, '_', '-' and '.', at most %d bytes, starting with a letter or digit", f.Name, MaxFunctionNameBytes)
		case seen[f.Name] != "":
			d.errorf(d.at(p+".name"), p+".name", "duplicate function name %q (first defined at %s)", f.Name, seen[f.Name])
		default:
			n := d.at(p + ".name")
			seen[f.Name] = fmt.Sprintf("line %d", n.Line)
		}
		rt, ok := c.Runtimes[f.Runtime]
		if !ok {
			d.errorf(d.at(p+".runtime"), p+".runtime", "unknown runtime %q (known: %s)", f.Runtime, runtimeNames(c))
		}
		switch f.Protocol {
		case "", rt.Protocol:
		case ProtocolCall:
			if len(rt.CallCommand) == 0 {
				d.errorf(d.at(p+".protocol"), p+".protocol", "runtime %s speaks only the %s protocol", f.Runtime, rt.Protocol)
			}
		case ProtocolStream:
			d.errorf(d.at(p+".protocol"), p+".protocol", "runtime %s speaks only the %s protocol", f.Runtime, rt.Protocol)
		default:
			d.errorf(d.at(p+".protocol"), p+".protocol", "unknown protocol %q (known: call, stream)", f.Protocol)
		}
		if f.Handler == "" && c.Effective(f).Discovery == DiscoveryConfig && rt.Build == "" {
			d.errorf(d.at(p+".handler"), p+".handler", "missing: set the entry point, such as module.function")
		}
		if f.Codedir == "" {
			d.errorf(d.at(p+".codedir"), p+".codedir", "missing: set the directory holding the function's code")
		} else {
			dir := f.Codedir
			if !filepath.IsAbs(dir) {
				dir = filepath.Join(c.Dir, dir)
			}
			c.Functions[i].Codedir = filepath.Clean(dir)
			st, err := os.Stat(dir)
			switch {
			case errors.Is(err, os.ErrNotExist):
				d.errorf(d.at(p+".codedir"), p+".codedir", "directory %s does not exist", dir)
			case err != nil:
				d.errorf(d.at(p+".codedir"), p+".codedir", "%v", err)
			case !st.IsDir():
				d.errorf(d.at(p+".codedir"), p+".codedir", "%s is not a directory", dir)
			}
		}
		if f.App != "" {
			for _, k := range []string{"env", "env_from", "concurrency", "queue", "instances", "limits", "user", "group"} {
				if d.present(p + "." + k) {
					d.errorf(d.at(p+"."+k), p+"."+k, "belongs to the app: set it under apps.%s", f.App)
				}
			}
			if first, ok := appRuntime[f.App]; ok && first != f.Runtime {
				d.errorf(d.at(p+".runtime"), p+".runtime", "app %s runs runtime %s; every function of an app uses the same runtime", f.App, first)
			} else {
				appRuntime[f.App] = f.Runtime
			}
			if rt.Build != "" {
				d.errorf(d.at(p+".app"), p+".app", "a %s function is its own program and cannot share a worker", f.Runtime)
			}
			if c.Effective(f).Discovery == DiscoveryApp {
				d.errorf(d.at(p+".app"), p+".app", "an Azure Functions app already shares its workers; app is for functions of polyfn.yaml")
			}
		}
		if f.App == "" {
			validateIsolation(d, p, f.Limits, f.User, f.Group)
			validateEnv(d, p+".env", f.Env)
		}
		for _, k := range []string{"concurrency", "queue", "instances.max", "timeout"} {
			if d.explicitZero(p + "." + k) {
				d.errorf(d.at(p+"."+k), p+"."+k, "must be above zero (leave it out for the default)")
			}
		}
		if f.Concurrency < 0 {
			d.errorf(d.at(p+".concurrency"), p+".concurrency", "must be at least 1")
		}
		if f.Queue < 0 {
			d.errorf(d.at(p+".queue"), p+".queue", "must be at least 1")
		}
		if f.Instances.Min < 0 {
			d.errorf(d.at(p+".instances.min"), p+".instances.min", "must not be negative")
		}
		if f.Instances.Max < f.Instances.Min {
			d.errorf(d.at(p+".instances.max"), p+".instances.max", "max (%d) is below min (%d)", f.Instances.Max, f.Instances.Min)
		}
	}
	validateMinInstances(c, d)
}

// validateMinInstances bounds instances.min of each pool, and of all of
// them together, by scaling.max_instances: the host cannot keep more
// instances than that, so a larger min could never be met (and would start
// a worker storm trying).
func validateMinInstances(c *Config, d *decoder) {
	limit := c.Scaling.MaxInstances
	if limit <= 0 {
		return // reported above
	}
	type pool struct {
		key string
		min int
	}
	var pools []pool
	for name, a := range c.Apps {
		pools = append(pools, pool{joinKey("apps", name) + ".instances.min", a.Instances.Min})
	}
	for i, f := range c.Functions {
		if f.App == "" {
			pools = append(pools, pool{fmt.Sprintf("functions[%d].instances.min", i), f.Instances.Min})
		}
	}
	// In file order, so that the sum is reported where it passes the limit.
	sort.SliceStable(pools, func(i, j int) bool {
		a, b := d.at(pools[i].key), d.at(pools[j].key)
		return a.Line < b.Line || a.Line == b.Line && a.Column < b.Column
	})
	total := 0
	for _, p := range pools {
		if p.min <= 0 {
			continue
		}
		if p.min > limit {
			d.errorf(d.at(p.key), p.key, "%d is above scaling.max_instances (%d), the most instances the host keeps", p.min, limit)
			continue
		}
		total += p.min
		if total > limit {
			d.errorf(d.at(p.key), p.key, "the instances.min of the functions and apps so far add up to %d, above scaling.max_instances (%d)", total, limit)
			total -= p.min
		}
	}
}

// validateEnv checks the variables of an env mapping at key path p: a
// name must be non-empty and hold no '=' or NUL, a value no NUL, or the
// worker's environment cannot be built.
func validateEnv(d *decoder, p string, env map[string]string) {
	names := make([]string, 0, len(env))
	for k := range env {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		key := joinKey(p, k)
		switch {
		case k == "":
			d.errorf(d.at(key), key, "empty variable name")
		case strings.ContainsAny(k, "=\x00"):
			d.errorf(d.at(key), key, "invalid variable name %q: no '=' or NUL", k)
		case strings.IndexByte(env[k], 0) >= 0:
			d.errorf(d.at(key), key, "the value contains a NUL byte, which no environment variable can hold")
		}
	}
}

// checkListen checks a listen address: host:port, the port a number from 0
// to 65535 (0: any free port) or a service name.
func checkListen(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return errors.New("want host:port")
	}
	if _, err := net.LookupPort("tcp", port); err != nil {
		return fmt.Errorf("port %q is not a number from 0 to 65535", port)
	}
	return nil
}

func (d *decoder) present(path string) bool { _, ok := d.pos[path]; return ok }

// validateHTTP checks the HTTP trigger's bounds.
func validateHTTP(h HTTP, d *decoder) {
	for _, k := range []string{"max_body", "max_body_total", "max_stream_body", "max_header_bytes", "max_connections",
		"read_header_timeout", "body_timeout", "write_timeout", "idle_timeout"} {
		if d.explicitZero("http." + k) {
			d.errorf(d.at("http."+k), "http."+k, "must be above zero (leave it out for the default)")
		}
	}
	if h.MaxConnections < 0 {
		d.errorf(d.at("http.max_connections"), "http.max_connections", "must be above zero")
	}
	if h.MaxBodyTotal > 0 && h.MaxBodyTotal < h.MaxBody {
		d.errorf(d.at("http.max_body_total"), "http.max_body_total", "%d bytes is below http.max_body (%d): a body of the largest size could never be read", h.MaxBodyTotal, h.MaxBody)
	}
}

func runtimeNames(c *Config) string {
	names := make([]string, 0, len(c.Runtimes))
	for n := range c.Runtimes {
		names = append(names, n)
	}
	sort.Strings(names)
	return fmt.Sprint(names)
}
