package config

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// The auth levels of a function (and of an Azure app function's
// authLevel).
const (
	// LevelAnonymous: no key is asked for.
	LevelAnonymous = "anonymous"
	// LevelFunction: a function key or an admin key.
	LevelFunction = "function"
	// LevelAdmin: an admin key only.
	LevelAdmin = "admin"
)

// AdminListenOff, as admin.listen, runs no admin listener.
const AdminListenOff = "off"

// Auth says which requests need a key, and which keys there are. Keys are
// read when the config loads (at start and at each reload).
type Auth struct {
	// Level, when set, is the level of every function and app function,
	// winning over their own (a host-wide override). Empty: each function's
	// own auth, else the default (DefaultLevel).
	Level string `yaml:"level"`
	// FunctionKeys open functions of level function.
	FunctionKeys []KeySource `yaml:"function_keys"`
	// AdminKeys open every function, and /admin/* and /metrics on the
	// public listener.
	AdminKeys []KeySource `yaml:"admin_keys"`
}

// KeySource names where keys come from: exactly one of Env, File and Dir.
type KeySource struct {
	// Name names the key (Env and File); a key of Dir is named by its file.
	// Empty means the variable's or the file's name.
	Name string `yaml:"name"`
	// Env is an environment variable holding the key.
	Env string `yaml:"env"`
	// File is a file holding the key (surrounding white space trimmed).
	// Relative to the config file's directory.
	File string `yaml:"file"`
	// Dir is a directory of keys, one a file, named by the file (a mounted
	// Kubernetes Secret); names starting with '.' are skipped.
	Dir string `yaml:"dir"`
	// Keys are the keys read from the source when the config loaded.
	Keys []Key `yaml:"-"`
}

// Key is one named key.
type Key struct {
	Name  string
	Value Secret
}

// Secret is a value never printed: formatted or marshalled, it reads
// "[redacted]".
type Secret string

const redacted = "[redacted]"

func (Secret) String() string               { return redacted }
func (Secret) GoString() string             { return redacted }
func (Secret) MarshalText() ([]byte, error) { return []byte(redacted), nil }
func (Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + redacted + `"`), nil }
func (Secret) MarshalYAML() (any, error)    { return redacted, nil }
func (Secret) Format(f fmt.State, _ rune)   { _, _ = f.Write([]byte(redacted)) }
func (Secret) LogValue() slog.Value         { return slog.StringValue(redacted) }

// Reveal is the key itself, for comparing with what a client sent.
func (s Secret) Reveal() string { return string(s) }

// Admin configures the admin listener, which serves /admin/*, /metrics
// and the health endpoints without a key.
type Admin struct {
	// Listen is the admin listener's address; "off" runs none. Empty means
	// DefaultAdminListen, which, when its port is taken, is skipped with a
	// warning (an address that is set must be free).
	Listen string `yaml:"listen"`
	// TLS, when set, makes the admin listener serve HTTPS (tls.go).
	TLS ServerTLS `yaml:"tls"`
}

// AdminListenDefault reports whether admin.listen was left to its default.
func (a Admin) AdminListenDefault() bool { return a.Listen == "" }

// AdminAddress is the admin listener's address, "" when it is off.
func (a Admin) AdminAddress() string {
	switch a.Listen {
	case "":
		return DefaultAdminListen
	case AdminListenOff:
		return ""
	}
	return a.Listen
}

// LoopbackListen reports whether addr (host:port) listens on loopback only.
func LoopbackListen(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// DefaultLevel is the level of a function that declares none when
// auth.level is not set: anonymous while the HTTP listener is on loopback
// (only this machine reaches it), function otherwise.
func (c *Config) DefaultLevel() string {
	if LoopbackListen(c.HTTP.Listen) {
		return LevelAnonymous
	}
	return LevelFunction
}

// AuthLevel is the level of a function that declares own ("" when it
// declares none): auth.level, else own, else DefaultLevel.
func (c *Config) AuthLevel(own string) string {
	if c.Auth.Level != "" {
		return c.Auth.Level
	}
	if own != "" {
		return own
	}
	return c.DefaultLevel()
}

// AdminOpen reports whether the public listener serves /admin/* and
// /metrics without a key: only when it is on loopback and no admin key is
// configured. Otherwise they need an admin key there.
func (c *Config) AdminOpen() bool {
	return LoopbackListen(c.HTTP.Listen) && len(c.Auth.AdminKeys) == 0
}

func validLevel(l string) bool {
	return l == LevelAnonymous || l == LevelFunction || l == LevelAdmin
}

// validateAuth checks the auth and admin sections and every function's
// auth, and reads the keys.
func validateAuth(c *Config, d *decoder) {
	if c.Auth.Level != "" && !validLevel(c.Auth.Level) {
		d.errorf(d.at("auth.level"), "auth.level", "unknown level %q (known: anonymous, function, admin)", c.Auth.Level)
	}
	for i, f := range c.Functions {
		if f.Auth != "" && !validLevel(f.Auth) {
			p := fmt.Sprintf("functions[%d].auth", i)
			d.errorf(d.at(p), p, "unknown level %q (known: anonymous, function, admin)", f.Auth)
		}
	}
	if l := c.Admin.Listen; l != "" && l != AdminListenOff {
		if err := checkListen(l); err != nil {
			d.errorf(d.at("admin.listen"), "admin.listen", "invalid address %q: %v, such as %s (or off)", l, err, DefaultAdminListen)
		}
	}
	validateServerTLS(c, d, "http.tls", &c.HTTP.TLS)
	validateServerTLS(c, d, "admin.tls", &c.Admin.TLS)
	names := map[string]string{}
	for _, list := range []struct {
		key  string
		srcs []KeySource
	}{{"auth.function_keys", c.Auth.FunctionKeys}, {"auth.admin_keys", c.Auth.AdminKeys}} {
		for i := range list.srcs {
			p := fmt.Sprintf("%s[%d]", list.key, i)
			readKeys(c, d, p, &list.srcs[i])
			for _, k := range list.srcs[i].Keys {
				if first, ok := names[k.Name]; ok {
					d.errorf(d.at(p), p, "a second key named %q (first at %s): key names are unique", k.Name, first)
				} else {
					n := d.at(p)
					names[k.Name] = fmt.Sprintf("line %d", n.Line)
				}
			}
		}
	}
}

// readKeys reads the keys of the source at key path p.
func readKeys(c *Config, d *decoder, p string, s *KeySource) {
	set := 0
	for _, v := range []string{s.Env, s.File, s.Dir} {
		if v != "" {
			set++
		}
	}
	if set != 1 {
		d.errorf(d.at(p), p, "set exactly one of env, file and dir")
		return
	}
	if s.Dir != "" && s.Name != "" {
		d.errorf(d.at(p+".name"), p+".name", "the keys of a dir are named by their files: leave name out")
		return
	}
	if d.withoutSecrets {
		return
	}
	rel := func(f string) string {
		if !filepath.IsAbs(f) {
			return filepath.Join(c.Dir, f)
		}
		return f
	}
	switch {
	case s.Env != "":
		v := strings.TrimSpace(os.Getenv(s.Env))
		if v == "" {
			d.errorf(d.at(p+".env"), p+".env", "environment variable %s is unset or empty", s.Env)
			return
		}
		s.Keys = []Key{{Name: orName(s.Name, s.Env), Value: Secret(v)}}
	case s.File != "":
		path := rel(s.File)
		v, err := readKeyFile(path)
		if err != nil {
			d.errorf(d.at(p+".file"), p+".file", "%v", err)
			return
		}
		s.Keys = []Key{{Name: orName(s.Name, filepath.Base(path)), Value: Secret(v)}}
	case s.Dir != "":
		dir := rel(s.Dir)
		ents, err := os.ReadDir(dir)
		if err != nil {
			d.errorf(d.at(p+".dir"), p+".dir", "read key directory: %v", err)
			return
		}
		sort.Slice(ents, func(i, j int) bool { return ents[i].Name() < ents[j].Name() })
		bad := false
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), ".") {
				continue // a Kubernetes Secret's ..data and its timestamped directories
			}
			path := filepath.Join(dir, e.Name())
			if st, err := os.Stat(path); err == nil && st.IsDir() {
				continue
			}
			v, err := readKeyFile(path)
			if err != nil {
				d.errorf(d.at(p+".dir"), p+".dir", "%v", err)
				bad = true
				continue
			}
			s.Keys = append(s.Keys, Key{Name: e.Name(), Value: Secret(v)})
		}
		if len(s.Keys) == 0 && !bad {
			d.errorf(d.at(p+".dir"), p+".dir", "directory %s holds no key files", dir)
		}
	}
}

func orName(name, fallback string) string {
	if name != "" {
		return name
	}
	return fallback
}

// readKeyFile reads one key: the file's text, surrounding white space
// trimmed. A missing or empty file is an error.
func readKeyFile(path string) (string, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("key file %s does not exist", path)
	}
	if err != nil {
		return "", fmt.Errorf("read key file: %w", err)
	}
	v := strings.TrimSpace(string(data))
	if v == "" {
		return "", fmt.Errorf("key file %s is empty", path)
	}
	return v, nil
}
