package http

import (
	"crypto/sha256"
	"crypto/subtle"
	"net"
	"net/http"
	"net/netip"
	"strings"

	"github.com/polyfn/polyfn/internal/config"
)

// The places a client sends a key.
const (
	// KeyHeader carries a key to /function/{name}, /admin/* and /metrics.
	KeyHeader = "X-Polyfn-Key"
	// AzureKeyHeader carries a key to an Azure Functions app's function,
	// as Azure Functions clients send it (KeyHeader is taken too).
	AzureKeyHeader = "X-Functions-Key"
	// KeyParam is the query parameter that carries a key anywhere.
	KeyParam = "code"
)

// auth checks requests against one configuration's levels and keys. A nil
// *auth lets everything through (a handler built without a config).
type auth struct {
	cfg *config.Config
	// levels are the functions' own levels, by name.
	levels map[string]string
	// function and admin hold the keys' SHA-256 sums.
	function, admin [][sha256.Size]byte
}

func newAuth(cfg *config.Config) *auth {
	a := &auth{cfg: cfg, levels: make(map[string]string, len(cfg.Functions))}
	for _, f := range cfg.Functions {
		a.levels[f.Name] = f.Auth
	}
	sums := func(srcs []config.KeySource) (out [][sha256.Size]byte) {
		for _, s := range srcs {
			for _, k := range s.Keys {
				out = append(out, sha256.Sum256([]byte(k.Value.Reveal())))
			}
		}
		return out
	}
	a.function, a.admin = sums(cfg.Auth.FunctionKeys), sums(cfg.Auth.AdminKeys)
	return a
}

// level is the level of the function named name of polyfn.yaml.
func (a *auth) level(name string) string {
	if a == nil {
		return config.LevelAnonymous
	}
	return a.cfg.AuthLevel(a.levels[name])
}

// appLevel is the level of an app function whose binding declares own.
func (a *auth) appLevel(own string) string {
	if a == nil {
		return config.LevelAnonymous
	}
	if a.cfg.Auth.Level != "" {
		return a.cfg.Auth.Level
	}
	return own
}

// allows reports whether key opens level: any request for anonymous, a
// function or admin key for function, an admin key for admin. Every key is
// compared, in constant time, whichever matches.
func (a *auth) allows(level, key string) bool {
	if level == config.LevelAnonymous || a == nil {
		return true
	}
	if key == "" {
		return false
	}
	sum := sha256.Sum256([]byte(key))
	match := 0
	for i := range a.admin {
		match |= subtle.ConstantTimeCompare(sum[:], a.admin[i][:])
	}
	if level == config.LevelFunction {
		for i := range a.function {
			match |= subtle.ConstantTimeCompare(sum[:], a.function[i][:])
		}
	}
	return match == 1
}

// takeKey returns the key r carries, in one of headers or (with query)
// the code query parameter, and removes it from r, so that no function sees
// it. Without query the code parameter is left to the function.
func takeKey(r *http.Request, query bool, headers ...string) string {
	key := ""
	for _, h := range headers {
		if v := r.Header.Get(h); v != "" && key == "" {
			key = v
		}
		r.Header.Del(h)
	}
	if query && strings.Contains(r.URL.RawQuery, KeyParam+"=") {
		q := r.URL.Query()
		if v := q.Get(KeyParam); v != "" && key == "" {
			key = v
		}
		q.Del(KeyParam)
		r.URL.RawQuery = q.Encode()
	}
	return strings.TrimSpace(key)
}

// unauthorized answers 401 for function (counted by it) at level.
func (h *Handler) unauthorized(w http.ResponseWriter, function, level, header string) {
	if h.srv != nil {
		h.srv.metrics.Unauthorized(function)
	}
	what := "a function key or an admin key"
	if level == config.LevelAdmin {
		what = "an admin key"
	}
	w.Header().Set("WWW-Authenticate", `Key realm="polyfn"`)
	writeError(w, http.StatusUnauthorized, "Unauthorized",
		"missing or wrong key: "+function+" needs "+what+", sent in the "+strings.ToLower(header)+" header or the "+KeyParam+" query parameter")
}

// requireAdmin serves next only to requests with an admin key, unless the
// configuration leaves the admin endpoints open on this listener. On the
// admin listener they are open, but for /admin/* (document, not metrics)
// reached at an address other than loopback when admin keys exist: a pod's
// admin port is reachable across the cluster for probes and scrapes.
func (h *Handler) requireAdmin(next http.Handler, document bool) http.Handler {
	if h.auth == nil || h.auth.cfg.AdminOpen() && !h.adminListener {
		return next
	}
	if h.adminListener && (!document || len(h.auth.admin) == 0) {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if h.adminListener && localLoopback(r) {
			next.ServeHTTP(w, r)
			return
		}
		if !h.auth.allows(config.LevelAdmin, takeKey(r, true, KeyHeader)) {
			h.unauthorized(w, "admin", config.LevelAdmin, KeyHeader)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// localLoopback reports whether r arrived at a loopback address of the
// host.
func localLoopback(r *http.Request) bool {
	local, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	if !ok {
		return false
	}
	ap, err := netip.ParseAddrPort(local.String())
	return err == nil && ap.Addr().Unmap().IsLoopback()
}
